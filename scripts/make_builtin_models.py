"""Generate the built-in models (deterministic weights, safetensors + manifest) into a model store.

    .venv/bin/python scripts/make_builtin_models.py                       # all, into executor.model_dir
    .venv/bin/python scripts/make_builtin_models.py mlp --model-dir /tmp/m --json

The same weights come out on every run with the same torch version, so the model ids are stable;
from Python, `ModelStore.install_builtin(...)` does the same for one model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from node.config import load_settings
from node.executor.builtin_models import DEFAULT_CONFIGS, write_builtin
from node.executor.store import ModelStore
from node.logging import configure_logging


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("architectures", nargs="*", choices=[[], *sorted(DEFAULT_CONFIGS)], default=[])
    parser.add_argument("--model-dir", type=Path, help="model store (default: executor.model_dir)")
    parser.add_argument("--config", type=Path, help="gpunode config file")
    parser.add_argument("--json", action="store_true", help="print {name: model_id} as JSON")
    args = parser.parse_args()
    configure_logging("WARNING")
    settings = load_settings(args.config).executor
    store = ModelStore(args.model_dir or settings.model_dir, settings.model_cache_bytes)
    installed = {}
    with tempfile.TemporaryDirectory() as staging:
        for architecture in args.architectures or sorted(DEFAULT_CONFIGS):
            write_builtin(architecture, Path(staging) / architecture)
            installed[architecture] = store.import_dir(Path(staging) / architecture).model_id
    if args.json:
        print(json.dumps(installed))
    else:
        for name, model_id in installed.items():
            print(f"{name:24} {model_id}")
        print(f"store: {store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
