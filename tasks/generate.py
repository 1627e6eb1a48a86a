"""generate: write the built-in dataset (tasks.kuaisar.world) in the KuaiSAR layout to paths.raw."""

from __future__ import annotations

import argparse

from tasks.config.params import load_params
from tasks.io.atomic import atomic_dir
from tasks.kuaisar.world import generate


def main(argv: list[str] | None = None) -> None:
    """Write the five files to paths.raw, atomically (all or nothing); skipped for a real source."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    table = params.source.kind == "table"
    if table or params.paths.source.resolve() != params.paths.raw.resolve():
        what = "the table in" if table else "the KuaiSAR folder"
        with atomic_dir(params.paths.raw) as tmp:
            (tmp / "NOT_GENERATED.txt").write_text(
                f"The pipeline reads {what} {params.paths.source} (paths.source);\n"
                "nothing was generated. Set paths.source to this folder (and source.kind to\n"
                "kuaisar) to use the generator.\n"
            )
        print(f"generate: skipped, the pipeline reads {params.paths.source}/ (paths.source)")
        return
    frames = generate(params.generate)
    with atomic_dir(params.paths.raw) as tmp:
        for name, df in frames.items():
            df.write_csv(tmp / name)
    sizes = ", ".join(f"{k}: {len(v):,}" for k, v in frames.items())
    print(f"generate: wrote {params.paths.raw}/ ({sizes})")


if __name__ == "__main__":
    main()
