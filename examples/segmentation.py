"""Segmentation (dense targets, an ignore index) with the paper's rule: the quickstart loop on dict batches.

    python examples/segmentation.py

Generated 12x12 images hold one bright square on noise; the target marks each pixel square (1) or background (0),
and the square's outline 255: ignored, as segmentation data sets mark uncertain borders. Batches are dicts
``{"image", "labels"}``; ``hardbatch.training_loss`` calls the model as ``model(image=...)`` (the default forward
leaves the labels out), and each image's loss is the cross-entropy averaged over its pixels not ignored
(``hardbatch.losses.dense(ignore_index=255)``). Runs in seconds on a CPU; prints the pixel accuracy per epoch.
"""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import hardbatch

IGNORE = 255


class Squares(Dataset):
    """``n`` noisy images (1, 12, 12), each with a square of random size and place, and its class map (12, 12)."""

    def __init__(self, n: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.images = 0.5 * torch.randn(n, 1, 12, 12, generator=generator)
        self.labels = torch.zeros(n, 12, 12, dtype=torch.long)
        for i in range(n):
            size = int(torch.randint(3, 7, (1,), generator=generator))
            top, left = torch.randint(0, 12 - size + 1, (2,), generator=generator).tolist()
            self.images[i, 0, top : top + size, left : left + size] += 1.0
            self.labels[i, top : top + size, left : left + size] = 1
        # The outline: pixels whose 3x3 neighbourhood holds both classes.
        square = self.labels[:, None].float()
        outline = (F.max_pool2d(square, 3, 1, 1) != -F.max_pool2d(-square, 3, 1, 1))[:, 0]
        self.labels[outline] = IGNORE

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "labels": self.labels[i]}


class TinySegmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 2, 1),
        )

    def forward(self, image):  # (b, 1, H, W) -> class logits (b, 2, H, W)
        return self.body(image)


train_set, test_set = Squares(384, seed=0), Squares(128, seed=1)
torch.manual_seed(0)
model = TinySegmenter()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
sampler = hardbatch.HardBatchSampler(
    len(train_set),
    batch_size=32,
    epochs=6,
    policy=hardbatch.policies.HardBatch(delta=0.5),
    shuffle_partition=True,
    seed=0,
)
loader, test_loader = DataLoader(train_set, batch_sampler=sampler), DataLoader(test_set, batch_size=128)
loss_fn = hardbatch.losses.dense(ignore_index=IGNORE)

trace = []  # (step, round, batch, loss, samples) of every optimizer step
while not sampler.done:
    for batch in loader:
        loss = hardbatch.training_loss(sampler, model, batch, loss_fn=loss_fn)
        if loss is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            last = sampler.last
            trace.append((last.step, last.round, last.batch, float(last.loss), last.samples))
        if sampler.epoch_ended:
            test_loss = hardbatch.evaluate(model, test_loader, torch.device("cpu"), loss_fn=loss_fn).loss
            with torch.no_grad():
                predicted = model(test_set.images).argmax(1)
            counted = test_set.labels != IGNORE
            accuracy = (predicted == test_set.labels)[counted].float().mean().item()
            print(f"epoch {sampler.epoch}: test loss {test_loss:.3f}, pixel accuracy {accuracy:.3f}")
