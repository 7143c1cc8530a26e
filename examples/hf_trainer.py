"""The paper's rule (or any hardbatch policy) in a Hugging Face Trainer: a tiny classifier, causal LM or T5.

Offline: the models are randomly initialised from small configs and the token data is generated. One process or
several (``torchrun --nproc-per-node 2 examples/hf_trainer.py --task lm``, gloo on CPUs; the trainer frees the
process group at exit, so the script ends with nothing to call):

    python examples/hf_trainer.py --task classify --delta 0.5 --epochs 3
    python examples/hf_trainer.py --task lm --policy selective-backprop --grad-accum 1
    python examples/hf_trainer.py --task seq2seq --policy infobatch

An encoder-decoder model (T5 here) needs no ``forward=`` or ``loss_fn=``: the Trainer makes its decoder inputs from
the labels and trains on each target sequence's mean token loss.

``--out DIR`` writes DIR/trace-rank<R>.json: the steps each rank trained (tests/integrations/test_transformers.py
compares them).
Needs ``pip install 'hardbatch[transformers]'``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; say so to the hub client

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
    TrainingArguments,
)

from hardbatch import losses
from hardbatch.integrations.transformers import HardBatchTrainer

VOCAB, LENGTH, CLASSES = 32, 12, 3


def token_data(task: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` generated samples: random tokens; the class is the first token mod 3 (classify), or the sequence is its
    own target (lm: each token predicts the next; the second half repeats the first, so it can be learnt), or the
    target is the sequence reversed (seq2seq)."""
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(1, VOCAB, (n, LENGTH // 2), generator=generator)
    ids = torch.cat([half, half], dim=1)
    mask = torch.ones_like(ids)
    labels = {"classify": ids[:, 0] % CLASSES, "lm": ids.clone(), "seq2seq": ids.flip(1)}[task]
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


def tiny_model(task: str, seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """A one-layer BERT classifier, GPT-2 or T5, random weights (seeded), with ``dropout`` (transformers' default is
    0.1; 0 makes runs comparable across batch layouts)."""
    torch.manual_seed(seed)
    if task == "seq2seq":
        return T5ForConditionalGeneration(
            T5Config(
                vocab_size=VOCAB,
                d_model=16,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=2,
                dropout_rate=dropout,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=1,
            )
        )
    if task == "classify":
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=LENGTH,
                num_labels=CLASSES,
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
        )
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=LENGTH,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def make_trainer(
    task: str = "classify",
    samples: int = 64,
    per_device: int = 4,
    grad_accum: int = 2,
    epochs: int = 2,
    out: str = "runs/hf_trainer",
    save_steps: int = 0,
    lr: float = 0.1,
    dropout: float = 0.0,
    model: torch.nn.Module | None = None,
    schedule: str = "constant",
    **policy,
) -> HardBatchTrainer:
    """A HardBatchTrainer for ``task`` (``model``: another model for it, default ``tiny_model``) with the Trainer's
    learning-rate ``schedule`` (it follows the selection's progress); ``policy``: ``policy=``, ``delta=`` and the
    policy's parameters."""
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        learning_rate=lr,
        optim="sgd",
        lr_scheduler_type=schedule,
        max_grad_norm=0.0,
        logging_steps=4,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    # One loss per sample, shape (b,); for seq2seq the Trainer's default (each target sequence's mean token loss).
    loss_fn = {"classify": {"loss_fn": losses.cross_entropy}, "lm": {"loss_fn": losses.token_lm()}}.get(task, {})
    model = model if model is not None else tiny_model(task, dropout=dropout)
    return HardBatchTrainer(model=model, args=args, train_dataset=token_data(task, samples), **loss_fn, **policy)


def main(argv: list[str] | None = None) -> HardBatchTrainer:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classify", "lm", "seq2seq"], default="classify")
    parser.add_argument("--policy", default="hardbatch")
    parser.add_argument("--delta", type=float, default=None, help="fraction of batches per round (δ policies)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--per-device", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--out", default="runs/hf_trainer")
    a = parser.parse_args(argv)
    policy = {"policy": a.policy, **({"delta": a.delta} if a.delta is not None else {})}
    trainer = make_trainer(a.task, a.samples, a.per_device, a.grad_accum, a.epochs, a.out, **policy)
    trainer.train()
    rank = trainer.args.process_index
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"trace-rank{rank}.json").write_text(
        json.dumps({"trace": trainer.trace_rows(), "cost": trainer.meter.state_dict()})
    )
    if trainer.is_world_process_zero():
        print(f"{a.task}: {len(trainer.trace)} optimizer steps, visits per batch {trainer.sampler.visits.tolist()}")
    return trainer


if __name__ == "__main__":
    main()
