"""`transferkit serve MODEL`: argument parsing only; the work is `transferkit.demo.launch`,
the logins `transferkit.demo.access`. (Outside `transferkit.demo`, whose import loads
Gradio: every other command would pay for it.)

Registered by `transferkit.cli` (`COMMANDS["serve"] = (add_serve, run_serve)`).
"""

from __future__ import annotations


def add_serve(sub) -> None:
    """Adds the `serve` command to the CLI's subparsers."""
    p = sub.add_parser("serve", help="the Gradio web demo")
    p.add_argument("model", help="run directory, export folder, SavedModel folder, "
                                 ".tflite or .onnx file")
    # Defaults None: `transferkit.demo.launch` holds them (127.0.0.1, 7860, 10mb).
    p.add_argument("--host", help="interface to bind (default 127.0.0.1: this machine "
                                  "only; 0.0.0.0 serves the network: add --auth)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also create a public gradio.live link (off by default)")
    p.add_argument("--max-file-size", help="largest upload accepted (default 10mb)")
    p.add_argument("--max-batch", type=int, help="concurrent /predict requests sharing "
                                                 "one forward pass (default 8; 1: none)")
    p.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                   help="require this login (repeatable)")
    p.add_argument("--auth-file", metavar="FILE",
                   help="require a login from this file of USER:PASSWORD lines")


def run_serve(args) -> int:
    """Serves the demo until interrupted."""
    from transferkit.demo import launch
    from transferkit.demo.access import parse_login, read_logins

    logins = [parse_login(text, "--auth") for text in args.auth or []]
    if args.auth_file:
        logins += read_logins(args.auth_file)
    given = {"host": args.host, "port": args.port, "max_file_size": args.max_file_size,
             "max_batch": args.max_batch, "auth": logins or None}
    launch(args.model, share=args.share, **{k: v for k, v in given.items() if v is not None})
    return 0


