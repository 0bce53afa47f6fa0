"""A real OpenAI-compatible server for tests: llama.cpp's own, as embedded by xllamacpp.

    python -m alicerce.testing.llm_server MODEL.gguf API_KEY

prints its base URL (".../v1") on one line, then serves until killed.
"""

from __future__ import annotations

import sys
import time

import xllamacpp


def main() -> None:
    path, key = sys.argv[1], sys.argv[2]
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.model_alias = "served-model"
    params.n_ctx = 2048
    params.n_parallel = 2
    params.kv_unified = True
    params.verbosity = -1
    params.api_keys = [key]
    server = xllamacpp.Server(params)
    print(f"{server.listening_address}/v1", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
