"""kontext: edit or generate images with a running flux_kontext server.

  kontext edit in.png "make it snowy" -o out.png
  kontext generate "a lighthouse at dusk" -o out.png --width 768 --height 512
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .client import KontextClient
from .errors import KontextError, ServerUnavailableError
from .protocol import DEFAULT_TIMEOUT_S, QUALITY_THRESHOLDS, EditResult, Progress


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kontext", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", type=Path, required=True, help="where to write the result image")
    common.add_argument("--url", help="server address (default 127.0.0.1:8001 for grpc, :8000 for http)")
    common.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    common.add_argument("--seed", type=int)
    common.add_argument("--steps", type=int)
    common.add_argument("--guidance", type=float)
    common.add_argument("--width", type=int)
    common.add_argument("--height", type=int)
    common.add_argument("--format", dest="output_format", choices=("png", "jpeg", "webp"),
                        help="result format (default: from the output file's suffix, else png)")
    quality = common.add_mutually_exclusive_group()
    quality.add_argument("--quality", choices=tuple(QUALITY_THRESHOLDS),
                         help="speed/quality: " + ", ".join(f"{k} = cache threshold {v}" for k, v in QUALITY_THRESHOLDS.items())
                         + " (default: the server's)")
    quality.add_argument("--cache-threshold", type=float, help="First Block Cache threshold (0 = exact)")
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the result")
    common.add_argument("--progress", action="store_true", help="stream progress and show a bar (gRPC)")
    commands = parser.add_subparsers(dest="command", required=True)
    edit = commands.add_parser("edit", parents=[common], help="edit an image as a prompt says")
    edit.add_argument("image", type=Path)
    edit.add_argument("prompt")
    generate = commands.add_parser("generate", parents=[common], help="generate an image from a prompt")
    generate.add_argument("prompt")
    return parser


_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def _follow(events) -> EditResult:
    """Draws a progress bar on stderr while events arrive; returns the final result."""
    for event in events:
        if isinstance(event, Progress):
            done = int(30 * event.step / event.steps)
            print(f"\r[{'#' * done}{'.' * (30 - done)}] step {event.step}/{event.steps} "
                  f"{event.elapsed_s:.1f}s elapsed, ~{event.eta_s:.1f}s left", end="", file=sys.stderr, flush=True)
        else:
            print(file=sys.stderr)
            return event
    raise KontextError("the stream ended without a result")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    options = {
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "width": args.width,
        "height": args.height,
        "output_format": args.output_format or _SUFFIX_FORMATS.get(args.output.suffix.lower()),
        "cache_threshold": QUALITY_THRESHOLDS[args.quality] if args.quality else args.cache_threshold,
    }
    try:
        with KontextClient(args.url, args.protocol, args.timeout) as client:
            if args.progress:
                events = (client.stream_edit(args.image, args.prompt, **options) if args.command == "edit"
                          else client.stream_generate(args.prompt, **options))
                result = _follow(events)
            elif args.command == "edit":
                result = client.edit(args.image, args.prompt, **options)
            else:
                result = client.generate(args.prompt, **options)
    except FileNotFoundError as exc:
        print(f"kontext: cannot read {exc.filename}", file=sys.stderr)
        return 2
    except ServerUnavailableError as exc:
        print(f"kontext: server unavailable at {args.url or 'the default address'} ({args.protocol}): {exc}", file=sys.stderr)
        return 3
    except KontextError as exc:
        print(f"kontext: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    result.save(args.output)
    print(json.dumps({"output": str(args.output), **result.metadata}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
