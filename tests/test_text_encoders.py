"""The word-GRU caption encoder and DS-SJE's joint embedding loss against hand values."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gansuite.nets.text import WordGRUEncoder, joint_embedding_loss


def test_the_joint_embedding_loss_matches_hand_computation():
    image, text = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [-1.0]])
    y = torch.tensor([0, 1])
    # scores F(v_n, t_m) = [[3, -1], [6, -2]]. Images: row 0 max(0 + 3, 1 - 1) - 3 = 0; row 1 max(1 + 6, 0 - 2) + 2 = 9.
    # Captions: caption 0 max(0 + 3, 1 + 6) - 3 = 4; caption 1 max(1 - 1, 0 - 2) + 2 = 2. (0 + 9) / 2 + (4 + 2) / 2 = 7.5.
    assert_close(joint_embedding_loss(image, text, y, num_classes=3), torch.tensor(7.5))  # class 2 absent: ignored


def test_class_scores_are_means_over_the_batch_members_of_a_class():
    image = torch.tensor([[1.0], [1.0], [1.0]])
    text = torch.tensor([[2.0], [4.0], [0.0]])
    y = torch.tensor([0, 0, 1])
    # Every image scores class 0 as (2 + 4) / 2 = 3 and class 1 as 0. Images of class 0: max(3, 1 + 0) - 3 = 0;
    # the image of class 1: max(1 + 3, 0) - 0 = 4. Every image is 1, so caption m scores t_m against either
    # class: captions 0, 1 (class 0) max(t, 1 + t) - t = 1; caption 2 (class 1) max(1 + 0, 0) - 0 = 1.
    expected = (0 + 0 + 4) / 3 + (1 + 1 + 1) / 3
    assert_close(joint_embedding_loss(image, text, y, num_classes=2), torch.tensor(expected))


def test_a_caption_encodes_the_same_whatever_padding_follows_it():
    torch.manual_seed(0)
    encoder = WordGRUEncoder(vocab_size=10, embedding_dim=6, word_dim=4, hidden=5).eval()
    short = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]])
    long = torch.cat([short, torch.zeros(2, 5, dtype=torch.long)], 1)
    assert_close(encoder(short), encoder(long), rtol=1e-5, atol=1e-6)
    assert encoder(short).shape == (2, 6)
    # Word order matters (the GRUs read it), unlike a bag of words.
    assert not torch.allclose(encoder(torch.tensor([[3, 4, 5]])), encoder(torch.tensor([[5, 4, 3]])))


def test_the_backward_gru_reads_each_caption_reversed():
    torch.manual_seed(0)
    encoder = WordGRUEncoder(vocab_size=10, embedding_dim=6, word_dim=4, hidden=5).eval()
    tokens = torch.tensor([[3, 4, 5, 0]])
    vectors = encoder.words(tokens[:, :3])
    forward, _ = encoder.forward_gru(vectors)
    backward, _ = encoder.backward_gru(vectors.flip(1))
    pooled = torch.cat([forward, backward.flip(1)], -1).mean(1)
    assert_close(encoder(tokens), encoder.out(pooled), rtol=1e-5, atol=1e-6)


def test_the_matching_aware_loss_matches_the_papers_formula_for_bce():
    from gansuite.losses import bce_d, hinge_d, matching_aware_d

    real, wrong, fake = torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([-1.0])
    sigmoid = torch.sigmoid
    expected = -torch.log(sigmoid(real)) - (torch.log(1 - sigmoid(wrong)) + torch.log(1 - sigmoid(fake))) / 2
    assert_close(matching_aware_d(bce_d, real, wrong, fake), expected.squeeze())
    # hinge: relu(1 - 2) + (relu(1 + 0.5) + relu(1 - 1)) / 2 = 0.75
    assert_close(matching_aware_d(hinge_d, real, wrong, fake), torch.tensor(0.75))


def test_the_networks_condition_on_the_caption():
    from gansuite.nets.text_to_image import MatchingDiscriminator, TextConditionalGenerator

    torch.manual_seed(0)
    g = TextConditionalGenerator(shape=(1, 28, 28), latent_dim=5, text_dim=6, projected=4, width=4).eval()
    d = MatchingDiscriminator(shape=(1, 28, 28), vocab_size=10, text_dim=6, projected=4, width=4, hidden=5).eval()
    z, text = torch.randn(3, 5), torch.randn(3, 6)
    x = g(z, text)
    assert x.shape == (3, 1, 28, 28) and d(x, text).shape == (3,)
    assert not torch.allclose(g(z, text), g(z, text.flip(0)))  # another caption, another image
    assert not torch.allclose(d(x, text), d(x, text.flip(0)))  # another caption, another score
    (d(x, text).sum() + d.embed_images(x).sum() + d.embed_text(torch.tensor([[3, 4, 0]])).sum()).backward()
    assert all(p.grad is not None for p in d.parameters())
    assert d.embed_images(x).shape == (3, 6)
