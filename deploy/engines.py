"""What runs an exported graph, each engine registered once by name: onnxruntime and OpenVINO run ONNX
exports (PolicyRunner's engine=, imitate_episodes.py's --runtime), torch runs TorchScript ones. An engine
loads one graph file into a `Graph`; `register_engine` adds one (docs/extending.md). The runtime
imports an engine's library only when it loads a graph with it: no torch for ONNX exports.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Graph:
    """One loaded graph: run({input name: array}) -> [output arrays]; inputs {name: shape with 'batch' or a
    name for a free dimension}, or None when the file does not declare them."""
    run: object
    inputs: dict = None


def onnxruntime_graph(path, threads):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return Graph(lambda feeds: session.run(None, feeds), {i.name: i.shape for i in session.get_inputs()})


def openvino_graph(path, threads):
    import openvino
    compiled = openvino.Core().compile_model(path, 'CPU', {
        'INFERENCE_PRECISION_HINT': 'f32', **({'INFERENCE_NUM_THREADS': threads} if threads else {})})
    inputs = {name: [d.get_length() if d.is_static else 'batch' for d in port.partial_shape]
              for port in compiled.inputs for name in port.get_names()}
    return Graph(lambda feeds: list(compiled(feeds).to_tuple()), inputs)


def torchscript_graph(path, threads):
    import torch  # TorchScript exports need torch; ONNX ones do not
    if threads:
        torch.set_num_threads(threads)
    module = torch.jit.load(path, map_location='cpu').eval()

    def run(feeds):
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        return [out.numpy()]
    return Graph(run)


ENGINES = {}  # name -> load(path, threads) -> Graph, for ONNX exports
FORMAT_ENGINES = {'torchscript': torchscript_graph}  # an export format its own engine runs, whatever is asked


def register_engine(name, load):
    """Make load(path, threads) -> Graph the engine `name` of ONNX exports."""
    ENGINES[name] = load


register_engine('onnxruntime', onnxruntime_graph)
register_engine('openvino', openvino_graph)


def engine_names():
    """The engines of ONNX exports, in the order registered."""
    return tuple(ENGINES)


def check_engine(engine):
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")


def load_graph(path, fmt, threads, engine):
    """The graph file `path` of an export in format `fmt`, loaded by `engine` (its format's own for TorchScript)."""
    return FORMAT_ENGINES.get(fmt, ENGINES[engine])(path, threads)
