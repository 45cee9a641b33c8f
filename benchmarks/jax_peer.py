"""The peer: the same objective written directly in JAX (float64, jit)."""
from __future__ import annotations

import numpy as np


def build(spec, X, Y):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    acts = {"tanh": jnp.tanh, "identity": lambda a: a}
    sizes = [spec["inputs"]] + [layer["units"] for layer in spec["layers"]]
    shapes = []
    for k, layer in enumerate(spec["layers"], start=1):
        srcs = layer.get("sources", [k - 1])
        shapes.append((layer["units"], 1 + sum(sizes[p] for p in srcs)))
    offsets = np.cumsum([0] + [s * d for s, d in shapes])
    Xj = jnp.asarray(X)
    if spec["loss"] == "softmax_cross_entropy":
        Yj = jax.nn.one_hot(jnp.asarray(Y), sizes[-1], dtype=jnp.float64)
    else:
        Yj = jnp.asarray(Y).reshape(X.shape[0], -1)

    def unpack(w):
        return [w[offsets[k]:offsets[k + 1]].reshape(shapes[k]) for k in range(len(shapes))]

    def forward_layers(Ws, X):
        xs = [X]
        for k, layer in enumerate(spec["layers"], start=1):
            srcs = layer.get("sources", [k - 1])
            u = jnp.concatenate([xs[p] for p in srcs], axis=1)
            W = Ws[k - 1]
            xs.append(acts[layer["activation"]](u @ W[:, 1:].T + W[:, 0]))
        return xs[-1]

    def loss_from_out(out, Y):
        if spec["loss"] == "softmax_cross_entropy":
            return -jnp.sum(Y * jax.nn.log_softmax(out, axis=1))
        return 0.5 * jnp.sum((out - Y) ** 2)

    def objective(w, X=Xj, Y=Yj):
        return loss_from_out(forward_layers(unpack(w), X), Y)

    return objective, unpack, offsets, Xj, Yj
