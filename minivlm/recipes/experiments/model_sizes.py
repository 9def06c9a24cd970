"""`minivlm experiment model-sizes`: the lecture's table of Transformer sizes, from Transformer-Base
(65M) to Gopher (280B), each as a configuration of minivlm's own models whose parameters are
counted by building their shapes alone (nn.init.shapes_only: GPT-3's 175 billion parameters take
no memory), next to the slide's column, with the relative difference and its reason.

Vocabularies and context lengths are those of the papers and the released configurations; where
the slide and the architecture disagree the reason says by how much and why.
"""
import dataclasses
import tracemalloc
from typing import Callable

from ... import nn
from ...models import CausalLM, LMConfig, MaskedLM
from ...plots import plot_model_sizes
from ...progress import progress
from ..common import Run, write_results

COMMAND = "experiment model-sizes"


def gpt(vocab_size, context_length, width, layers, heads):
    """A GPT-2-style decoder (CausalLM): learned positions, pre-norm blocks, output tied to the
    token embedding."""
    return lambda: CausalLM(LMConfig("causal", vocab_size, context_length, width, layers, heads))


def bert(vocab_size, context_length, width, layers, heads):
    """A BERT/RoBERTa-style encoder (MaskedLM): learned positions, post-norm blocks, the masked-LM
    head (dense, layer norm, tied decoder and its bias)."""
    return lambda: MaskedLM(LMConfig("mlm", vocab_size, context_length, width, layers, heads))


def encoder_decoder(vocab_size, width, heads, feedforward, layers=6):
    """"Attention Is All You Need": nn.Transformer (layers encoder and layers decoder blocks,
    sinusoidal positions: no parameters) and one embedding shared by the encoder's input, the
    decoder's input and the output layer, as the paper ties them."""
    return lambda: nn.ModuleDict({
        "embedding": nn.Embedding(vocab_size, width),
        "transformer": nn.Transformer(width, heads, layers, layers, feedforward)})


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the slide (its Layers, Width, Heads and Params) and minivlm's configuration."""
    name: str
    layers: str
    width: int
    heads: str
    slide: float
    build: Callable
    model: str        # which minivlm model, its vocabulary and context
    cause: str        # the difference in a word or three
    reason: str       # ... and in a sentence


ROWS = [
    Row("Transformer-Base", "12", 512, "8", 65e6, encoder_decoder(37000, 512, 8, 2048),
        "nn.Transformer 6+6, shared embedding, V=37000", "the vocabulary",
        "the slide's 12 layers are 6 encoder + 6 decoder blocks; at the paper's 'about 37000' "
        "tokens the architecture has 63.1M, and 65M would need 40,700 tokens"),
    Row("Transformer-Large", "12", 1024, "16", 213e6, encoder_decoder(37000, 1024, 16, 4096),
        "nn.Transformer 6+6, shared embedding, V=37000", "the vocabulary",
        "6 + 6 blocks; 213M would need 35,800 tokens (and Base 40,700: the paper's two counts "
        "do not share one vocabulary)"),
    Row("BERT-Base", "12", 768, "12", 110e6, bert(30522, 512, 768, 12, 12),
        "MaskedLM, V=30522, T=512", "BERT's extra heads",
        "BERT adds 2 segment embeddings, the pooler and the next-sentence head (0.6M): 110.1M"),
    Row("BERT-Large", "24", 1024, "16", 340e6, bert(30522, 512, 1024, 24, 16),
        "MaskedLM, V=30522, T=512", "rounding",
        "with BERT's segment embeddings, pooler and next-sentence head 336.2M: the paper rounds "
        "up"),
    Row("XLNet-Large", "24", 1024, "16", 340e6, bert(32000, 512, 1024, 24, 16),
        "MaskedLM, V=32000, T=512", "relative attention",
        "XLNet's relative attention adds a d×d position projection and relative biases per "
        "layer (+25.2M) and drops absolute positions and the LM-head transform (-1.6M): "
        "360.3M, which the slide's '~340M' understates"),
    Row("RoBERTa", "24", 1024, "16", 355e6, bert(50265, 514, 1024, 24, 16),
        "MaskedLM, V=50265, T=514", "rounding",
        "RoBERTa-Large's own layout (but one segment embedding, 1024 parameters)"),
    Row("GPT-2", "48", 1600, "? (25)", 1.5e9, gpt(50257, 1024, 1600, 48, 25),
        "CausalLM, V=50257, T=1024", "rounding",
        "the released GPT-2 XL has 1,557,611,200; its paper says 1542M, the slide 1.5B"),
    Row("Megatron-LM", "72", 3072, "32", 8.3e9, gpt(51200, 1024, 3072, 72, 32),
        "CausalLM, V=51200 (padded), T=1024", "rounding", "the slide rounds"),
    Row("Turing-NLG", "78", 4256, "28", 17e9, gpt(50257, 1024, 4256, 78, 28),
        "CausalLM, V=50257, T=1024 (assumed)", "rounding",
        "the slide rounds 17.2B; vocabulary and context are not published (GPT-2's assumed; "
        "0.2B would take 47,000 more tokens)"),
    Row("GPT-3", "96", 12288, "96", 175e9, gpt(50257, 2048, 12288, 96, 96),
        "CausalLM, V=50257, T=2048", "rounding", "the slide rounds 174.6B up"),
    Row("Gopher", "80", 16384, "128", 280e9, gpt(32000, 2048, 16384, 80, 128),
        "CausalLM, V=32000, T=2048", "relative positions minivlm lacks",
        "Gopher's Transformer-XL relative positions add a d×d projection per layer "
        "(80·16384² = 21.5B): 279.7B"),
]


def count_parameters(build):
    """(parameters, peak bytes allocated) of build()'s model, built with shapes and no memory."""
    tracemalloc.start()
    try:
        with nn.init.shapes_only():
            count = build().num_parameters()
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def add_arguments(parser):
    parser.add_argument("--out", default="runs/model-sizes",
                        help="directory for results.json, metrics.jsonl and model_sizes.png "
                             "(default runs/model-sizes)")


def run(args):
    experiment = Run.start(args.out, COMMAND, {"out": str(args.out)})
    results = []
    for index, row in enumerate(progress(ROWS, desc="model-sizes", unit="model")):
        counted, peak_bytes = count_parameters(row.build)
        results.append({"model": row.name, "layers": row.layers, "width": row.width,
                        "heads": row.heads, "minivlm": row.model, "slide": row.slide,
                        "counted": counted, "relative_difference": counted / row.slide - 1,
                        "peak_bytes": peak_bytes, "cause": row.cause, "reason": row.reason})
        experiment.log(index + 1, model=row.name, counted=counted, slide=row.slide,
                       peak_bytes=peak_bytes)
    write_results(experiment.directory, {"models": results, "conclusion": conclusion(results)})
    plot_model_sizes([r["model"] for r in results], [r["slide"] for r in results],
                     [r["counted"] for r in results], experiment.directory / "model_sizes.png")
    print(table(results))
    print(conclusion(results))


def _short(count):
    for unit, scale in (("B", 1e9), ("M", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}" if count < 100 * scale else \
                f"{count / scale:.0f}{unit}"
    return f"{count:,}"


def table(results):
    """The slide's columns, minivlm's configuration and count, the difference and its reason."""
    lines = [f"{'model':<18}{'layers':>7}{'width':>7}{'heads':>7}  {'minivlm model':<44}"
             f"{'slide':>7}{'counted':>16}{'diff':>8}  reason"]
    for r in results:
        lines.append(f"{r['model']:<18}{r['layers']:>7}{r['width']:>7}{r['heads']:>7}  "
                     f"{r['minivlm']:<44}{_short(r['slide']):>7}{r['counted']:>16,}"
                     f"{100 * r['relative_difference']:>+7.1f}%  {r['reason']}")
    return "\n".join(lines)


def conclusion(results):
    """One sentence: how many rows match within 2%, the largest model's build, the others."""
    close = [r for r in results if abs(r["relative_difference"]) <= 0.02]
    others = [f"{r['model']} {100 * r['relative_difference']:+.1f}%: {r['cause']}"
              for r in results if r not in close]
    largest = max(results, key=lambda r: r["counted"])
    return (f"{len(close)} of {len(results)} sizes on the slide are minivlm's own models within "
            f"2%, counted from shapes alone ({largest['model']}'s {_short(largest['counted'])} "
            f"parameters built in {largest['peak_bytes'] / 2 ** 20:.1f} MiB)"
            + (f"; the others differ by {'; '.join(others)}." if others else "."))
