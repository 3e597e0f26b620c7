"""``zprime-grad fileset``: a coffea fileset from a list of NanoAOD files with event counts and a samples table."""

from __future__ import annotations

import argparse

from zprime_grad.limits import integer


def register(subparsers) -> None:
    p = subparsers.add_parser("fileset", help="build a coffea fileset from a file list (e.g. CMS Open Data)",
                              description=__doc__.splitlines()[0])
    p.add_argument("file_list", help="JSON {sample: {variation: {files: [{path, nevts}]}}} (e.g. nanoaods.json)")
    p.add_argument("--samples", required=True,
                   help="YAML {sample: {process, xsec_pb, is_data}} (e.g. configs/opendata2016/samples.yaml)")
    p.add_argument("--max-files", type=integer(1), default=None, help="at most this many files per sample (a quick look)")
    p.add_argument("--out", required=True, help="the fileset JSON to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic, terminal
    from zprime_grad.skim.filelist import fileset_from_list, load_samples, summary, write_fileset

    atomic.writable_file(args.out, "--out file")
    fileset = fileset_from_list(args.file_list, load_samples(args.samples), max_files=args.max_files)
    path = write_fileset(fileset, args.out)
    terminal.say(f"fileset: {summary(fileset)} -> {path}")
    return 0
