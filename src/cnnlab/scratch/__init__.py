"""Convolution from scratch: NumPy (and Pillow for files) only, never torch.

``conv`` (correlation, convolution, pooling), ``kernels`` (the named classic kernels) and
``images`` (read, write, samples, grids). This is the half of cnnlab a reader who knows only
NumPy can follow line by line; a test checks that importing it never imports torch.
"""
