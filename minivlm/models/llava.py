"""A LLaVA-style vision–language model (Liu et al. 2023, "Visual Instruction Tuning"; the two-layer
projector of LLaVA-1.5): a pre-trained vision model and a pre-trained language model joined by a
small projector — the lecture's "Pre-Trained Vision Model ? Pre-Trained Language Model".

    LlavaForConditionalGeneration
      vision_tower            CLIP's Vision Transformer (clip.py): each image's patch features,
                              the hidden states of block vision_feature_layer (before ln_post)
      multi_modal_projector   mlp2x_gelu: linear_1 -> exact GELU -> linear_2, from the vision
                              width to the text width: each patch becomes one token embedding
      language_model          the decoder: LlamaForCausalLM (llama.py) or CausalLM (lm.py)

The prompt holds image_seq_length copies of the image token per image (as transformers'
processor expands "<image>"); their embeddings are replaced, in order, by the image's projected
patch features, and the decoder reads the result as any prompt:

    model = LlavaForConditionalGeneration(LlavaConfig(vision_config, text_config,
                                                      image_token_id=3))
    logits = model(input_ids, pixel_values)        # (B, T), (N, 3, R, R) -> (B, T, vocab)
    ids = model.generate(input_ids, pixel_values=pixel_values, max_new_tokens=20)

generate encodes the images once, into the prompt's embeddings (prompt_embeddings), then
continues with the decoder's KV cache (generation.py). Module names are transformers'
LlavaForConditionalGeneration's (minivlm.pretrained.llava maps its checkpoints onto them).

To start from trained parts, pass them: LlavaForConditionalGeneration(config,
vision_tower=clip.visual, language_model=decoder) uses their modules and parameters themselves
(not copies; training the VLM trains them), all but CLIP's projection `visual.proj` into its
joint space, which LLaVA does not use (it reads hidden states).
"""
import dataclasses

from .. import backend, nn
from .. import functional as F
from ..autograd import Tensor
from .clip import CLIPVisionConfig, VisionTransformer, checked_pixels
from .generation import GenerationMixin, input_embeddings
from .llama import LlamaConfig, LlamaForCausalLM
from .lm import CausalLM, LMConfig
from .vit import activation

STRATEGIES = ("default", "full")   # "default" drops the class token's feature, "full" keeps it
HF_IMAGE_TOKEN_ID = 32000          # transformers' default image_token_index


@dataclasses.dataclass
class LlavaConfig:
    """transformers' LlavaConfig fields. vision_config: a CLIPVisionConfig of a Vision Transformer
    (or a dict of its fields); text_config: a LlamaConfig, or an LMConfig of the GPT-2-style
    CausalLM (or a dict of either's fields). image_token_id (transformers 4's image_token_index
    is accepted too): the id standing for one image feature in the prompt. image_seq_length:
    the features per image, (R/P)² ("default") or (R/P)² + 1 ("full"), derived when None.
    vision_feature_layer: which hidden state of the tower (-2: the penultimate block's output)."""
    vision_config: CLIPVisionConfig
    text_config: LlamaConfig | LMConfig
    image_token_id: int | None = None
    image_seq_length: int | None = None
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    image_token_index: dataclasses.InitVar[int | None] = None

    def __post_init__(self, image_token_index):
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**self.vision_config)
        if isinstance(self.text_config, dict):
            text_class = LMConfig if "objective" in self.text_config else LlamaConfig
            self.text_config = text_class(**self.text_config)
        if self.vision_config.is_resnet:
            raise ValueError("LlavaConfig: the vision tower must be a Vision Transformer, got a "
                             f"ModifiedResNet config (layers={self.vision_config.layers})")
        if isinstance(self.text_config, LMConfig) and self.text_config.objective != "causal":
            raise ValueError(f"LlavaConfig: the language model must be a decoder, got an LMConfig "
                             f"with objective={self.text_config.objective!r}")
        self._resolve_image_token_id(image_token_index)
        self._check_feature_layer()
        if self.vision_feature_select_strategy not in STRATEGIES:
            raise ValueError(f"LlavaConfig: vision_feature_select_strategy must be one of "
                             f"{STRATEGIES}, got {self.vision_feature_select_strategy!r}")
        activation(self.projector_hidden_act)
        self._check_image_seq_length()

    def _resolve_image_token_id(self, image_token_index):
        if None not in (self.image_token_id, image_token_index) \
                and self.image_token_id != image_token_index:
            raise ValueError(f"LlavaConfig: image_token_id={self.image_token_id} and "
                             f"image_token_index={image_token_index} disagree")
        if self.image_token_id is None:
            self.image_token_id = (HF_IMAGE_TOKEN_ID if image_token_index is None
                                   else image_token_index)
        vocab_size = self.text_config.vocab_size
        if not 0 <= self.image_token_id < vocab_size:
            raise ValueError(f"LlavaConfig: image_token_id={self.image_token_id} is not in the "
                             f"language model's vocabulary (vocab_size={vocab_size})")

    def _check_feature_layer(self):
        layers = self.vision_config.layers
        if not isinstance(self.vision_feature_layer, int) \
                or not -(layers + 1) <= self.vision_feature_layer <= layers:
            raise ValueError(f"LlavaConfig: vision_feature_layer must be one index into the "
                             f"tower's {layers + 1} hidden states (-{layers + 1} .. {layers}), "
                             f"got {self.vision_feature_layer!r}")

    def _check_image_seq_length(self):
        vision = self.vision_config
        grid = vision.image_resolution // vision.patch_size
        features = grid ** 2 + (self.vision_feature_select_strategy == "full")
        if self.image_seq_length is None:
            self.image_seq_length = features
        if self.image_seq_length != features:
            raise ValueError(
                f"LlavaConfig: image_seq_length={self.image_seq_length}, but the vision tower "
                f"gives {features} features per image ({grid}×{grid} patches of a "
                f"{vision.image_resolution}×{vision.image_resolution} image, the class token "
                f"{'kept' if features > grid ** 2 else 'dropped'} by strategy "
                f"{self.vision_feature_select_strategy!r})")

    @property
    def text_hidden_size(self):
        """The width of the language model's token embeddings."""
        text = self.text_config
        return text.width if isinstance(text, LMConfig) else text.hidden_size

    @property
    def feature_block(self):
        """vision_feature_layer as a non-negative index: the number of tower blocks it needs."""
        return self.vision_feature_layer % (self.vision_config.layers + 1)


class LlavaMultiModalProjector(nn.Module):
    """LLaVA-1.5's mlp2x_gelu: linear_2(gelu(linear_1(x))), (..., vision width) -> (..., text
    width). Initialised as torch's Linear."""

    def __init__(self, config):
        super().__init__()
        width, bias = config.text_hidden_size, config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.vision_config.width, width, bias=bias)
        self.act = activation(config.projector_hidden_act)()
        self.linear_2 = nn.Linear(width, width, bias=bias)

    def forward(self, image_features):
        return self.linear_2(self.act(self.linear_1(image_features)))


def splice_image_features(embeddings, input_ids, image_token_id, features):
    """The prompt's embeddings with image features in place of the image tokens' embeddings.

    embeddings (B, T, D) Tensor: the token embeddings of input_ids (B, T), an integer array;
    features (N, S, D) Tensor: S features for each of N images. The prompt's image tokens, counted
    row by row (row-major over the batch), take the N·S features in order, image 0's S first:
    -> (B, T, D). Their own embeddings get no gradient, each feature the gradient of its
    position. A count mismatch is a ValueError naming both counts."""
    batch, length, width = embeddings.shape
    images, per_image = features.shape[:2]
    xp = backend.xp_of(input_ids)
    is_image = (input_ids == image_token_id).reshape(-1)
    tokens = int(is_image.sum())
    if tokens != images * per_image:
        raise ValueError(f"the prompt holds {tokens} image tokens but {images} "
                         f"{'image gives' if images == 1 else 'images give'} "
                         f"{images * per_image} features (image_token_id={image_token_id}, "
                         f"{per_image} per image)")
    # each position reads one row of [the token embeddings; the image features]
    source = xp.arange(batch * length)
    source[is_image] = batch * length + xp.arange(tokens)
    rows = F.cat([embeddings.reshape(batch * length, width), features.reshape(-1, width)])
    return rows[source].reshape(batch, length, width)


class LlavaForConditionalGeneration(GenerationMixin, nn.Module):
    """The VLM (see the module docstring). vision_tower, language_model: modules to use instead
    of fresh ones (a trained CLIP's `visual`, a trained decoder), checked against the config."""

    def __init__(self, config, vision_tower=None, language_model=None):
        super().__init__()
        self.config = config
        self.vision_tower = VisionTransformer(config.vision_config, output_dim=None)
        if vision_tower is not None:
            _checked_part(vision_tower, (VisionTransformer,), config.vision_config, "vision_tower")
            self._share_tower(vision_tower)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = (_decoder(config.text_config) if language_model is None else
                               _checked_part(language_model, (LlamaForCausalLM, CausalLM),
                                             config.text_config, "language_model"))

    def _share_tower(self, visual):
        """Make the tower hold the modules and parameters of `visual` (a CLIP's image encoder)
        themselves, but not its projection proj into CLIP's joint space: LLaVA reads hidden
        states, and Hugging Face's layout has no place for it. `visual` is left as it is."""
        for name, member in (*visual.named_children(), *visual.named_parameters(recurse=False)):
            if name != "proj":
                setattr(self.vision_tower, name, member)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_image_features(self, pixel_values):
        """pixel_values (N, 3, R, R) -> the projected features (N, image_seq_length, text
        width): hidden state vision_feature_layer of the tower, the class token dropped
        ("default") or kept ("full"), through the projector."""
        pixels = checked_pixels(pixel_values, self.vision_tower, type(self).__name__)
        block = self.config.feature_block
        features = self.vision_tower.hidden_states(pixels, num_blocks=block)[block]
        if self.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]
        return self.multi_modal_projector(features)

    def prompt_embeddings(self, input_ids=None, inputs_embeds=None, pixel_values=None):
        """The (B, T, D) input of the decoder: the token embeddings of input_ids with the images'
        features spliced in at the image tokens (splice_image_features), or inputs_embeds as
        given when there are no images."""
        if pixel_values is None:
            return input_embeddings(self.get_input_embeddings(), input_ids, inputs_embeds)
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("pixel_values need input_ids (not inputs_embeds): the image tokens "
                             "in them say where the images go")
        embeddings = input_embeddings(self.get_input_embeddings(), input_ids)
        ids = backend.to_backend(_data(input_ids), embeddings.device)
        return splice_image_features(embeddings, ids, self.config.image_token_id,
                                     self.get_image_features(pixel_values))

    def hidden_states(self, input_ids, pixel_values=None, attention_mask=None):
        """The decoder's final hidden states, before the LM head: (B, T) ids with their images
        -> (B, T, text width). A Llama decoder's only."""
        if not isinstance(self.language_model, LlamaForCausalLM):
            raise TypeError(f"hidden_states: needs a Llama decoder, this VLM has a "
                            f"{type(self.language_model).__name__}")
        embeddings = self.prompt_embeddings(input_ids, None, pixel_values)
        return self.language_model.model(inputs_embeds=embeddings, attention_mask=attention_mask)

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, logits_to_keep=0):
        """input_ids (B, T) with image_seq_length image tokens per image of pixel_values
        (N, 3, R, R) -> logits (B, T, vocab). Without pixel_values it is the decoder itself; the
        other arguments are the decoder's (generation.py)."""
        embeddings = self.prompt_embeddings(input_ids, inputs_embeds, pixel_values)
        return self.language_model(inputs_embeds=embeddings, attention_mask=attention_mask,
                                   position_ids=position_ids, past_key_values=past_key_values,
                                   logits_to_keep=logits_to_keep)


class LlavaForScoring(nn.Module):
    """A VLM's trunk with a scalar head (transformers' *ForSequenceClassification with one label):
    the reward model of RLHF, scoring a response at its last token, and PPO's value model,
    scoring every prefix (the lecture's "reward model" beside the policy).

        scores = model(input_ids, pixel_values, attention_mask)     # (B, T): one per position
        rewards = model.score_last(input_ids, pixel_values, attention_mask)   # (B,)

    from_vlm(vlm) starts from a trained VLM's parameters (copies) and a zero head."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = LlavaForConditionalGeneration(config)
        self.score = nn.Linear(config.text_hidden_size, 1, bias=False)

    @classmethod
    def from_vlm(cls, vlm):
        scorer = cls(vlm.config)
        scorer.model.load_state_dict(vlm.state_dict())
        scorer.score.weight.array[...] = 0
        return scorer

    def forward(self, input_ids, pixel_values=None, attention_mask=None):
        hidden = self.model.hidden_states(input_ids, pixel_values, attention_mask)
        return self.score(hidden)[..., 0]

    def score_last(self, input_ids, pixel_values=None, attention_mask=None):
        """The score at each row's last non-padding token (padding on either side): (B,)."""
        scores = self(input_ids, pixel_values, attention_mask)
        batch, length = scores.shape
        if attention_mask is None:
            return scores[:, -1]
        mask = backend.to_backend(_data(attention_mask), scores.device).astype(bool)
        last = length - 1 - mask[:, ::-1].argmax(axis=1)
        return scores[backend.xp_of(mask).arange(batch), last]


def _data(x):
    return x.array if isinstance(x, Tensor) else backend.default_xp().asarray(x)


def _decoder(text_config):
    return CausalLM(text_config) if isinstance(text_config, LMConfig) else \
        LlamaForCausalLM(text_config)


def _checked_part(module, classes, config, name):
    """`module` if it is one of `classes` built from `config`, else a clear error."""
    if not isinstance(module, classes):
        raise TypeError(f"LlavaForConditionalGeneration: {name} must be a "
                        f"{' or '.join(c.__name__ for c in classes)}, got "
                        f"{type(module).__name__}")
    if module.config != config:
        raise ValueError(f"LlavaForConditionalGeneration: the given {name} has config "
                         f"{module.config}, but the LlavaConfig says {config}")
    return module
