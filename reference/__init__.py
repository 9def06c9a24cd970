"""NumPy-only, forward-only, float64 transcriptions of the lecture, to read next to the slides.

attention.py    attention, self-, masked and multi-head attention (X, Q, K, V, E, A, Y)
transformer.py  layer norm, MLP, residual, the block, positional encoding, encoder–decoder
vit.py          Vision Transformer (Hugging Face ViTModel weights)
swin.py         Swin Transformer: windows, shifts, relative position bias, patch merging
resnet.py       convolution, batch norm, ResNet (torchvision) and CLIP's modified ResNet
clip.py         CLIP's contrastive loss and zero-shot classification
llama.py        RMSNorm, RoPE, grouped-query attention, SwiGLU, the Llama decoder
llava.py        the VLM's projector, the image splice, instruction tuning's labels
alignment.py    alignment tuning: Bradley–Terry, DPO (sigmoid, IPO, hinge), PPO's clipped losses,
                the KL penalty, GAE

Nothing here imports minivlm or torch: this is what the library is checked against.
"""
