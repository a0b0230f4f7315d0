"""`cnnlab lab`: a local web page for looking inside your own network.

The server (``server.create_app``) serves a fixed list of targets, run directories made by
``cnnlab train`` or pretrained ImageNet networks (``targets``), as JSON and PNG endpoints,
and the page in ``static/`` (plain HTML, CSS and JavaScript modules: no build step, no
CDN, works offline). Every computation is cnnlab's own: the model's forward pass, the
NumPy convolution for the arithmetic, cnnlab.insight for errors and explanations.
"""
