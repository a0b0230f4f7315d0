"""``cnnlab filter`` (a gallery of filtered images) and ``cnnlab kernels`` (the named kernels)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from cnnlab.cli import options
from cnnlab.errors import CnnlabError
from cnnlab.files import write_bytes
from cnnlab.scratch.conv import BOUNDARIES, MODES
from cnnlab.scratch.images import SAMPLES, apply_kernel, gallery, load_image
from cnnlab.scratch.kernels import ALIASES, KERNELS, get_kernel, random_kernels, resolve_name
from cnnlab.text import clean_figure_text

# Formats the gallery can be saved in (matplotlib's names, chosen by --out's extension).
_FIGURE_FORMATS = ("png", "jpg", "jpeg", "pdf", "svg")


def register(sub) -> None:
    p = sub.add_parser(
        "filter",
        help="filter an image with named (or random) kernels and save a gallery",
        description="Correlate an image with classic kernels (cnnlab.scratch.conv, NumPy only) and save "
        "the original beside each filtered map. Grey kernels filter the image's grey version; "
        "colour kernels such as 'brown' sum over R, G, B. See `cnnlab kernels` for names.",
    )
    p.add_argument("image", help=f"a PNG/JPEG/BMP file, or a sample: {', '.join(SAMPLES)}")
    p.add_argument("--kernel", "-k", action="append", default=[], metavar="NAME",
                   help="a kernel name, e.g. sobel-x (repeat for more)")
    p.add_argument("--random", type=options.bounded(int, options.NON_NEGATIVE), default=0, metavar="N",
                   help="add N random kernels, uniform in [-1, 0] (they find nothing in particular)")
    p.add_argument("--seed", type=options.bounded(int, options.SEED),
                   default=0, help="seed of the random kernels (default 0)")
    p.add_argument("--grey", action="store_true", help="read the image as grey first")
    p.add_argument("--mode", choices=MODES, default="same", help="output size (default: same)")
    p.add_argument("--boundary", choices=BOUNDARIES, default="symm",
                   help="how edges are padded (default: symm, mirrored)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the gallery (.png, .pdf, ...)")
    options.add_verbosity(p, quiet="no 'wrote' line", verbose="also print each map's range")
    options.add_examples(p, "cnnlab filter grace_hopper --kernel sobel-x --kernel sobel-y --out edges.png",
                         "cnnlab filter photo.jpg --random 4 --grey --out random.png")
    p.set_defaults(func=run_filter)

    k = sub.add_parser("kernels", help="list the named kernels", description="List the named kernels "
                       "that `cnnlab filter --kernel` and cnnlab.scratch.kernels.get_kernel accept.")
    options.add_verbosity(k, quiet="the names only", verbose="also print each kernel's weights")
    options.add_examples(k, "cnnlab kernels", "cnnlab filter grace_hopper --kernel sobel-x --out sobel.png")
    k.set_defaults(func=run_kernels)


def run_filter(args: argparse.Namespace) -> int:
    out = Path(args.out)
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in _FIGURE_FORMATS:
        raise CnnlabError(f"--out {args.out!r} has no known figure extension; use one of "
                          f"{', '.join('.' + s for s in _FIGURE_FORMATS)}")
    if not out.parent.is_dir():
        raise CnnlabError(f"--out folder '{out.parent}' does not exist; create it first")
    if not args.kernel and args.random == 0:
        raise CnnlabError(f"no kernels given; add --kernel NAME (one of {', '.join(KERNELS)}) or --random N")
    if args.random < 0:
        raise CnnlabError(f"--random must be >= 0; got {args.random}")

    # Compute everything before writing anything: a bad name or shape leaves no file behind.
    # Title each map with what was typed, plus the real name when an alias was used.
    titles = {name: name if resolve_name(name) == name else f"{name} ({resolve_name(name)})" for name in args.kernel}
    kernels = {title: get_kernel(name) for name, title in titles.items()}
    image = load_image(args.image, colour="grey" if args.grey else "auto")
    if args.random:
        channels = image.shape[2] if image.ndim == 3 else None
        bank = random_kernels(args.random, channels=channels, seed=args.seed)
        kernels.update({f"random {i + 1}": k for i, k in enumerate(bank)})
    maps = {name: apply_kernel(image, k, mode=args.mode, boundary=args.boundary) for name, k in kernels.items()}
    figure = gallery(image, maps, image_title=f"original {Path(args.image).name}")
    buffer = io.BytesIO()
    clean_figure_text(figure)  # names from the file system may not be UTF-8
    figure.savefig(buffer, format=suffix, dpi=100)

    write_bytes(out, buffer.getvalue())  # atomic: an existing gallery is never left half-written
    if args.verbosity == options.VERBOSE:
        for name, m in maps.items():
            print(f"{name}: {m.shape}, min {float(m.min()):.3f}, max {float(m.max()):.3f}")
    options.say(args, f"wrote {out} (original + {len(maps)} filtered map{'s' * (len(maps) != 1)})")
    return 0


def run_kernels(args: argparse.Namespace) -> int:
    width = max(map(len, KERNELS))
    for name, kernel in KERNELS.items():
        if args.verbosity == options.QUIET:
            print(name)
            continue
        shape = "x".join(map(str, kernel.weights.shape))
        print(f"{name:<{width}}  {shape:<5}  {kernel.description}")
        if args.verbosity == options.VERBOSE:
            print("    " + str(kernel.weights.round(3).tolist()))
    options.say(args, "aliases: " + ", ".join(f"{alias} -> {name}" for alias, name in ALIASES.items()))
    return 0
