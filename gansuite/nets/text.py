"""Text encoders for text-to-image GANs, and the joint embedding loss that trains them (Reed, Akata, Lee &
Schiele 2016, "Learning deep representations of fine-grained visual descriptions", DS-SJE).

:class:`WordGRUEncoder`: word ids (B x L, 0 = padding at the end) -> one embedding per caption, from a
bidirectional GRU averaged over the caption's words. The backward GRU reads each caption's words reversed in
place (padding stays at the end), so a caption encodes the same however much padding follows it, and no
lengths are read on the host.
:class:`FixedText`: fixed caption embeddings (``text_encoder=precomputed`` or ``sentence_transformers``) as they
are: the identity, with no parameters.
:func:`joint_embedding_loss`: DS-SJE's symmetric structured loss with class labels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WordGRUEncoder(nn.Module):
    """Word ids (B, L) int64 -> caption embeddings (B, ``embedding_dim``).

    Args:
        vocab_size: number of word ids (0 is padding, 1 unknown).
        embedding_dim: size of the caption embedding.
        word_dim: size of the word vectors.
        hidden: GRU units per direction.
        word_dropout: in training, the fraction of words replaced by the unknown word, so that captions with
            words never seen still encode (held-out phrasings).
    """

    def __init__(self, *, vocab_size: int, embedding_dim: int = 128, word_dim: int = 64, hidden: int = 128,
                 word_dropout: float = 0.1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.word_dropout = word_dropout
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.forward_gru = nn.GRU(word_dim, hidden, batch_first=True)
        self.backward_gru = nn.GRU(word_dim, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, embedding_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        mask = tokens != 0
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & mask
            tokens = torch.where(drop, torch.ones_like(tokens), tokens)
        vectors = self.words(tokens)
        # Reverse the words of each caption, not its padding: position t < length reads word length - 1 - t.
        lengths = mask.sum(1, keepdim=True)
        t = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        order = torch.where(t < lengths, lengths - 1 - t, t).unsqueeze(-1).expand_as(vectors)
        forward, _ = self.forward_gru(vectors)
        backward, _ = self.backward_gru(vectors.gather(1, order))
        states = torch.cat([forward, backward.gather(1, order[..., :1].expand_as(backward))], -1)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.out(pooled)


class FixedText(nn.Module):
    """Fixed caption embeddings (B, E) float -> the same (B, E): D's caption encoder when the embeddings come from
    a file or a pretrained model (:mod:`gansuite.data.text_sources`); nothing to train."""

    def forward(self, embeddings: Tensor) -> Tensor:
        return embeddings


def _class_means(scores: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mean of ``scores`` (rows x B) over the columns of each class: (rows x K), and which classes occur (K)."""
    onehot = nn.functional.one_hot(y, num_classes).to(scores.dtype)  # B x K
    counts = onehot.sum(0)
    return scores @ onehot / counts.clamp_min(1.0), counts > 0


def joint_embedding_loss(image: Tensor, text: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """DS-SJE (Reed et al. 2016), in one batch: images and captions (B x D each, row n describing image n)
    with class labels ``y``.

    Compatibility is ``F(v, t) = v . t``. For an image, a class's score is its mean compatibility with the
    batch's captions of that class; the image's loss is ``max_c (Delta(y, c) + score_c) - score_y`` over the
    classes present (Delta: 0 for its own class, 1 for another); the same with images and captions swapped;
    the loss is the mean over images plus the mean over captions.
    """
    scores = image @ text.T  # scores[n, m] = F(image n, caption m)
    margin = 1.0 - nn.functional.one_hot(y, num_classes).to(scores.dtype)  # Delta(y_n, c)
    per_image, present = _class_means(scores, y, num_classes)
    per_text, _ = _class_means(scores.T, y, num_classes)
    loss = 0.0
    for means in (per_image, per_text):
        augmented = (margin + means).masked_fill(~present, float("-inf"))
        own = means.gather(1, y.unsqueeze(1)).squeeze(1)
        loss = loss + (augmented.max(1).values - own).mean()
    return loss
