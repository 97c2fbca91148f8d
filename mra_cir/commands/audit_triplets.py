"""`mra-cir audit-triplets`: a person audits a sample of a triplet dataset in the browser (caption wrong, text wrong,
ok), answers saved as given; `--report` prints the error rates and, for a verified dataset, how often the verifier
agreed with the person. See `docs/audit.md`.

Example:

```bash
mra-cir audit-triplets triplets/ --sample 100 --seed 0          # the review page on http://127.0.0.1:7860
mra-cir audit-triplets triplets/ --sample 100 --seed 0 --report # error rates by kind, verifier vs the audit
```
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from mra_cir.app.audit_data import AuditArguments


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # the dataset as a positional argument
        argv = ["--dataset", argv[0], *argv[1:]]
    parser = HfArgumentParser(AuditArguments, description=__doc__.split("\n\n")[0])
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # __post_init__'s checks
        print(f"mra-cir audit-triplets: {err}", file=sys.stderr)
        return 2

    from mra_cir.app.audit_data import AuditSession, audit_report, format_report, load_splits

    try:
        session = AuditSession(load_splits(args.dataset), args.sample, args.seed, args.answers)
    except (ValueError, OSError) as err:
        print(f"mra-cir audit-triplets: {err}", file=sys.stderr)
        return 1
    if args.report:
        print(format_report(audit_report(session)))
        return 0
    from mra_cir.app.audit_page import audit_launch_options, build_audit_page

    print(f"audit of {len(session.items)} triplets ({session.judged()} judged); answers: {session.answers_path}")
    try:
        build_audit_page(session).queue().launch(**audit_launch_options(args.server_name, args.port))
    except OSError as err:  # the port is taken, the address is not this machine's
        print(f"mra-cir audit-triplets: cannot serve: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
