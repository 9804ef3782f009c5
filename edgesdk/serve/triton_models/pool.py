"""Triton Python backend: token states -> sentence embeddings (mean / cls pooling, L2 normalisation), or logits ->
class probabilities (softmax), the same arithmetic as edgesdk.runtime.text.pool.

Settings come from this model's config.pbtxt parameters (pooling, normalize, the input and output names).
Needs numpy only.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        # protobuf JSON leaves out empty strings, so a missing string_value means ""
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        self.pooling, self.normalize = params["pooling"], params["normalize"] == "true"
        self.states, self.output = params["states"], params["output"]

    def execute(self, requests):
        responses = []
        for request in requests:
            states = pb_utils.get_input_tensor_by_name(request, self.states).as_numpy().astype(np.float32)
            if self.pooling == "mean":
                mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
                mask = mask.astype(np.float32)[:, :, None]
                vectors = (states * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            elif self.pooling == "cls":
                vectors = states[:, 0]
            elif self.pooling == "softmax":
                shifted = np.exp(states - states.max(axis=-1, keepdims=True))
                vectors = shifted / shifted.sum(axis=-1, keepdims=True)
            else:
                vectors = states
            if self.normalize:
                vectors = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
            out = pb_utils.Tensor(self.output, np.ascontiguousarray(vectors, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
