"""`cnnlab lab`: serve the lab page for runs and pretrained networks until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import threading
import webbrowser
from pathlib import Path

from cnnlab.cli import options
from cnnlab.errors import CnnlabError

PRETRAINED = ("squeezenet1_1", "vgg16")
# Measured with benchmarks/bench_lab.py (BENCHMARKS.md, "Issue 26: the lab"): a mnist-cnn forward for
# a drawing takes a few ms on one thread, and with another process busy on a core two threads
# wait for each other, several times slower than one.
DEFAULT_THREADS = 1
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def register(sub) -> None:
    p = sub.add_parser(
        "lab",
        help="an interactive page for looking inside your own network (local web server)",
        description="Serve a local page with the network's layers, predictions while you draw, the "
        "arithmetic of a convolution, errors, filters, attributions and training curves, for run "
        "directories made by `cnnlab train` and/or a pretrained ImageNet network. Without RUN_DIR or "
        "--model it serves the runs under ./runs. Needs the `lab` extra: pip install 'cnnlab[lab]'.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories (default: those under ./runs)")
    p.add_argument("--model", choices=PRETRAINED, help="also serve this pretrained ImageNet network")
    p.add_argument("--weights", type=Path, metavar="PATH",
                   help="its state-dict file (default: download torchvision's official weights once)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: only this computer can connect)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header names NAME (this machine's name or address as "
                        "others type it; repeatable). Other names are refused even with --host 0.0.0.0, so a web "
                        "page elsewhere cannot reach the lab through DNS rebinding")
    p.add_argument("--port", type=options.bounded(int, options.PORT),
                   default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                   help=f"CPU threads for each computation (default {DEFAULT_THREADS}: on a shared or busy machine "
                        "one thread answers a drawing several times faster than two that wait for each other; "
                        "see BENCHMARKS.md)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    options.add_offline(p)
    options.add_device(p, default="cpu")
    p.add_argument("--max-test", type=int, metavar="N", help="use only the first N test images (default all)")
    options.add_verbosity(p, quiet="only the address served, not the list of networks",
                          verbose="also log every request the server answers")
    options.add_examples(p, "cnnlab lab runs/mnist-mnist-cnn --open", "cnnlab lab --model squeezenet1_1 --port 0")
    p.set_defaults(func=run)


def build_targets(args: argparse.Namespace) -> list:
    from cnnlab.lab.targets import PretrainedTarget, RunTarget, discover_runs

    if args.weights is not None and args.model is None:
        raise CnnlabError(f"--weights {args.weights} needs --model {'|'.join(PRETRAINED)} to say which network it is")
    paths = list(args.runs)
    if not paths and args.model is None:
        paths = discover_runs(Path("runs"))
        if not paths:
            raise CnnlabError("no run directories under ./runs; pass RUN_DIR, train one with `cnnlab demo` or "
                              "`cnnlab train`, or use --model squeezenet1_1")
    for path in paths:
        if not (path / "config.json").is_file():
            raise CnnlabError(f"{path} is not a run directory (no config.json); pass one made by `cnnlab train`")
    targets = [RunTarget(path, max_test=args.max_test, device=args.device) for path in paths]
    if args.model is not None:
        targets.append(PretrainedTarget(args.model, weights=args.weights, download=not args.offline,
                                        device=args.device))
    return targets


def allowed_hosts(host: str, extra: list[str]) -> tuple[str, ...]:
    """The Host header names the lab answers: loopback, the address it listens on (unless a
    wildcard), and each --allow-host. Never "any": that would let DNS rebinding through."""
    from cnnlab.lab.server import LOOPBACK_HOSTS

    names = list(LOOPBACK_HOSTS)
    for name in ([] if host in WILDCARD_HOSTS else [host]) + list(extra):
        name = name.strip().lower()
        if not name or any(c in name for c in "/ @?#"):
            raise CnnlabError(f"--allow-host {name!r} is not a host name or address; give one like lab.local or 192.168.1.5")
        if ":" in name and not name.startswith("["):
            names.append(f"[{name}]")  # an IPv6 address as a Host header writes it
        names.append(name)
    return tuple(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cnnlab.lab.server import LOOPBACK_HOSTS, create_app
    except ModuleNotFoundError as exc:
        raise CnnlabError(f"the lab needs {exc.name}; install it with: pip install 'cnnlab[lab]'") from exc
    if args.threads < 1:
        raise CnnlabError(f"--threads must be an integer >= 1; got {args.threads}")
    targets = build_targets(args)
    loopback = args.host in LOOPBACK_HOSTS
    allowed = allowed_hosts(args.host, args.allow_host)
    if not loopback:
        names = ", ".join(n for n in allowed if n not in LOOPBACK_HOSTS) or "none but loopback"
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the lab "
              f"and see your runs; there is no password. Host names answered: {names} "
              "(add the name others type with --allow-host NAME)", file=sys.stderr)
    import torch

    torch.set_num_threads(args.threads)  # every request's forward and gradient computes on this many threads
    sock = bind(args.host, args.port)  # before uvicorn: a busy port is one line, not uvicorn's ERROR and exit 3
    app = create_app(targets, allowed_hosts=allowed)
    verbose = args.verbosity == options.VERBOSE
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info" if verbose else "warning",
                            access_log=verbose)
    server = uvicorn.Server(config)
    for i, target in enumerate(targets):
        options.say(args, f"  [{i}] {target.name} ({target.kind})")

    stopped = threading.Event()

    def announce() -> None:
        # The port is known only once uvicorn has bound it (--port 0 picks one).
        while not server.started:
            if stopped.wait(0.05):
                return
        port = server.servers[0].sockets[0].getsockname()[1]
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{port}/"
        print(f"cnnlab lab: serving {url}  (Ctrl-C to stop)", flush=True)
        if args.open:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        stopped.set()
        sock.close()
    return 0


def bind(host: str, port: int):
    """A listening-ready TCP socket bound to ``host``:``port`` (0: any free port), or a one-line
    CnnlabError naming the port when it is taken, out of range or the host is unknown."""
    import errno
    import socket

    if not 0 <= port <= 65535:
        raise CnnlabError(f"--port {port} is not a port number; use 1..65535 (or 0 for any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise CnnlabError(f"--host {host!r} is not an address of this machine ({exc}); use 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CnnlabError(f"port {port} on {host} is already in use (another lab or program is listening "
                              "there); stop it or choose another port, e.g. --port 0 for any free one") from None
        raise CnnlabError(f"cannot listen on {host} port {port} ({exc.strerror or exc}); "
                          "choose another --host or --port") from None
    sock.set_inheritable(True)
    return sock
