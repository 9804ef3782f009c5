"""Triton Python backend: TEXT (TYPE_STRING, one per row) -> the model's integer feeds, as the edgesdk runner does.

Written by `edgesdk triton` beside tokenizer.json; settings (max length, static length, pad token, the feeds'
names and dtypes) come from this model's config.pbtxt parameters. Needs numpy and tokenizers.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        # protobuf JSON leaves out empty strings, so a missing string_value means ""
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        static = int(params["static_length"]) if params.get("static_length") else None
        self.tokenizer.enable_truncation(static or int(params["max_length"]))
        padding = {"pad_id": int(params["pad_id"]), "pad_token": params["pad_token"]}
        if static:
            padding["length"] = static
        self.tokenizer.enable_padding(**padding)
        self.feeds = [(name, np.dtype(dtype)) for name, dtype in json.loads(params["inputs"])]

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in rows]
            encodings = self.tokenizer.encode_batch(texts)
            columns = {"input_ids": [e.ids for e in encodings],
                       "attention_mask": [e.attention_mask for e in encodings],
                       "token_type_ids": [e.type_ids for e in encodings]}
            tensors = [pb_utils.Tensor(name, np.asarray(columns[name], dtype=dtype)) for name, dtype in self.feeds]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
