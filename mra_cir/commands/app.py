"""`mra-cir app`: the composed-search web app (Gradio) over a gallery index, ranking with the code of `mra-cir search`.

With nothing passed it serves the last quickstart run (`quickstart_output/`): the MRA-trained model beside the stage-1
model, over the quickstart benchmark's gallery; without a quickstart run yet, the page says how to make one. See
`docs/app.md`.

Example:

```bash
mra-cir app                                                  # the quickstart's model and gallery
mra-cir app --model out/mra-cir --index gallery/ --images photos/ --compare_model Salesforce/blip2-itm-vit-g \
    --compare_index gallery-blip2/ --server-name 0.0.0.0 --port 7860
```
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from mra_cir.app.arguments import AppArguments


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(AppArguments, description=__doc__.split("\n\n")[0])
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # __post_init__'s checks
        print(f"mra-cir app: {err}", file=sys.stderr)
        return 2

    from mra_cir.app.engine import load_engine
    from mra_cir.app.ui import EngineHolder, build_app, launch_options

    holder = EngineHolder(
        lambda: load_engine(args), quickstart_dir=args.quickstart_dir if args.uses_quickstart else None
    )
    holder.load()  # progress bars in the terminal while the indexes are built; errors go to the page
    demo = build_app(holder, k=args.k)
    try:
        demo.queue().launch(**launch_options(args.server_name, args.port, args.share))
    except OSError as err:  # the port is taken, the address is not this machine's
        print(
            f"mra-cir app: cannot serve on {args.server_name or '127.0.0.1'}:{args.port or 7860}: {err}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
