"""A tiny causal language model (plain PyTorch) trained with Selective Backprop, in the quickstart loop.

    python examples/token_lm.py

Generated sequences count up from a random start by a random stride (mod 16), padded to 12 tokens. Batches are
dicts ``{"input_ids", "attention_mask", "labels"}`` with padding labelled -100, as Hugging Face data collators make
them; each sequence's loss is the mean next-token cross-entropy over its real tokens (``hardbatch.losses.token_lm``).
``selective-backprop`` scores each loaded batch in a no-grad pass with that same loss and back-propagates only the
sequences it keeps: ``hardbatch.training_loss`` keeps the same rows of every tensor of the dict, and returns None for
a batch of which it keeps none (recorded, no optimizer step). Runs in seconds on a CPU.
"""

import torch
from torch.utils.data import DataLoader, Dataset

import hardbatch

VOCAB, LENGTH, PAD = 16, 12, 0


class Counting(Dataset):
    """``n`` sequences start, start + stride, ... (mod VOCAB, shifted past PAD) of 6 to 12 tokens, padded to 12."""

    def __init__(self, n: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB - 1, (n, 1), generator=generator)
        stride = torch.randint(1, 4, (n, 1), generator=generator)
        lengths = torch.randint(6, LENGTH + 1, (n, 1), generator=generator)
        positions = torch.arange(LENGTH)
        self.attention_mask = (positions < lengths).long()
        self.input_ids = ((start + stride * positions) % (VOCAB - 1) + 1) * self.attention_mask
        self.labels = self.input_ids.masked_fill(self.attention_mask == 0, -100)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}


class TinyCausalLM(torch.nn.Module):
    """Token and position embeddings, one causal self-attention block, and a next-token head: logits (b, T, V)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(LENGTH, width)
        self.block = torch.nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, input_ids, attention_mask):
        length = input_ids.shape[1]
        hidden = self.tokens(input_ids) + self.positions(torch.arange(length, device=input_ids.device))
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).triu(1)  # True: not seen
        hidden = self.block(hidden, src_mask=causal, src_key_padding_mask=attention_mask == 0, is_causal=True)
        return self.head(hidden)


train_set, test_set = Counting(512, seed=0), Counting(128, seed=1)
torch.manual_seed(0)
model = TinyCausalLM()
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
sampler = hardbatch.HardBatchSampler(
    len(train_set), batch_size=32, epochs=5, policy=hardbatch.policies.SelectiveBackprop(), seed=0
)
loader = DataLoader(train_set, batch_sampler=sampler)
loss_fn = hardbatch.losses.token_lm()  # the model is called as model(input_ids=..., attention_mask=...)
test_loader = DataLoader(test_set, batch_size=128)

kept = []  # (batch, sequences back-propagated) of every optimizer step
while not sampler.done:
    for batch in loader:
        loss = hardbatch.training_loss(sampler, model, batch, loss_fn=loss_fn)
        if loss is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            kept.append((sampler.last.batch, sampler.last.samples))
        if sampler.epoch_ended:
            test = hardbatch.evaluate(model, test_loader, torch.device("cpu"), loss_fn=loss_fn).loss
            meter = sampler.meter
            print(
                f"epoch {sampler.epoch}: test loss {test:.3f}; {meter.samples_forward_nograd} sequences scored, "
                f"{meter.samples_backprop} back-propagated"
            )
