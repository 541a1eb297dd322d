"""The model-spec contract (ModelSpec Protocol) that the executor and the reference run rely on."""

from utils.pipeline.executor.models import ModelSpec, decoder_spec, mlp_spec


def test_shipped_model_specs_keep_the_model_spec_contract():
    for spec in (mlp_spec(), decoder_spec(), decoder_spec(ep=2)):
        assert isinstance(spec, ModelSpec)
        chunks = spec.cut(spec.build(), 2)
        (x, y), = spec.make_microbatches(1)
        out = x
        for chunk in chunks:
            out = chunk(out)
        assert spec.loss(out, y).ndim == 0 and isinstance(spec.name, str) and spec.ep >= 1

    class NoLoss:
        ep, name = 1, "no loss"

        def build(self): ...
        def cut(self, model, n_chunks): ...
        def make_microbatches(self, n, seed=None): ...

    assert not isinstance(NoLoss(), ModelSpec)
