"""Strategies on Ultralytics' DetectionTrainer: a small subclass plus callbacks, no fork.

- `Plan` holds the strategy state and is re-derived from the epoch at every epoch start (so resume just works):
  which modules are frozen, which groups are re-warming their learning rate, which BatchNorms stay in eval mode.
- The trainer subclass overrides four hooks: get_model (LoRA wrapping), build_optimizer (one param group per
  module group x Ultralytics' weight/bn/bias split, backbone LR multiplier), optimizer_step (LR re-warm-up,
  frozen EMA entries kept equal to the frozen weights) and save_model (LoRA merged into best.pt).
Ultralytics re-enables requires_grad on every layer in _setup_train and calls model.train() each epoch; the
callbacks below run after both (on_pretrain_routine_end, on_train_epoch_start, first on_train_batch_start).
On several GPUs the Plan reaches Ultralytics' DDP workers inside the callbacks it pickles for them (edgekit.train.ddp).
"""
from __future__ import annotations

import time

from .._ultralytics import ultralytics
from .freeze import (ADAPTER_KEYS, ALWAYS_FROZEN, count_trainable, freeze_bn, frozen_group_names, frozen_indices,
                     module_groups, module_index, set_frozen)
from .strategy import Strategy

REWARM_ITERS = 100  # batches over which a newly unfrozen group's LR ramps back up (capped at one epoch)


def _unwrap(model):
    for attr in ("module", "_orig_mod"):
        model = getattr(model, attr, model)
    return model


class Plan:
    """Strategy state inside one Ultralytics run."""

    def __init__(self, strategy: Strategy, backbone_lr_mult: float = 1.0, log=print, records=None):
        self.strategy, self.backbone_lr_mult, self.log = strategy, float(backbone_lr_mult), log
        self.groups: dict[str, list[int]] | None = None
        self.frozen: set[int] | None = None
        self.applied: list[dict] = []
        self.records: dict[int, dict] = {int(r["epoch"]) - 1: r for r in (records or [])}
        self.batch_i, self.bn_pending, self._t0 = 0, False, 0.0
        self._ema_pairs, self._ema_id = [], None
        self.on_epoch = None  # called with (trainer, record) after each validated epoch

    # --- schedule -------------------------------------------------------------------------------------------
    def frozen_at(self, epoch: int) -> set[int]:
        return frozen_indices(self.groups, self.strategy.stage_at(epoch).freeze)

    def unfrozen_since(self, epoch: int) -> dict[str, int]:
        """group -> the epoch (> 0) at which it last became trainable, for groups trainable at `epoch`."""
        out = {}
        for e in range(1, epoch + 1):
            before, now = self.frozen_at(e - 1), self.frozen_at(e)
            for g, idx in self.groups.items():
                if set(idx) & before and not set(idx) & now:
                    out[g] = e
                elif set(idx) & now:
                    out.pop(g, None)
        return out

    def apply(self, trainer, epoch: int) -> None:
        model = _unwrap(trainer.model)
        if self.groups is None:
            self.groups = module_groups(model)
        idx = self.frozen_at(epoch)
        n = set_frozen(model, idx)
        if n == 0:
            from ..errors import EdgekitError

            raise EdgekitError(f"strategy '{self.strategy.spec}': epoch {epoch} freezes every module, nothing to train")
        if idx != self.frozen:
            self.frozen = idx
            self._ema_id = None
            entry = {"epoch": epoch, "frozen_groups": frozen_group_names(self.groups, idx),
                     "frozen_modules": sorted(idx), "trainable_params": n}
            self.applied.append(entry)
            what = ", ".join(entry["frozen_groups"]) or (f"modules 0-{max(idx)}" if idx else "nothing")
            self.log(f"edgekit: epoch {epoch + 1}: frozen {what}; {n:,} trainable parameters")

    # --- callbacks ------------------------------------------------------------------------------------------
    def callbacks(self) -> dict:
        return {"on_pretrain_routine_end": self.on_pretrain_routine_end,
                "on_train_epoch_start": self.on_train_epoch_start,
                "on_train_batch_start": self.on_train_batch_start,
                "on_train_batch_end": self.on_train_batch_end,
                "on_train_epoch_end": self.on_train_epoch_end,
                "on_fit_epoch_end": self.on_fit_epoch_end}

    def on_pretrain_routine_end(self, trainer):
        self.records = {e: r for e, r in self.records.items() if e < trainer.start_epoch}
        self.apply(trainer, trainer.start_epoch)

    def on_train_epoch_start(self, trainer):
        self.apply(trainer, trainer.epoch)
        self.batch_i, self.bn_pending, self._t0 = 0, True, time.time()

    def on_train_batch_start(self, trainer):
        if self.bn_pending:  # after Ultralytics' model.train() for this epoch
            freeze_bn(_unwrap(trainer.model), self.frozen)
            self.bn_pending = False

    def on_train_batch_end(self, trainer):
        self.batch_i += 1

    def on_train_epoch_end(self, trainer):
        loss = trainer.tloss
        if isinstance(loss, dict):
            loss = sum(float(v) for v in loss.values())
        elif loss is not None:
            loss = float(loss.sum())
        self.records[trainer.epoch] = {
            "epoch": trainer.epoch + 1, "train_s": round(time.time() - self._t0, 3), "loss": loss,
            "trainable_params": count_trainable(_unwrap(trainer.model)),
            "frozen_groups": frozen_group_names(self.groups, self.frozen)}

    def on_fit_epoch_end(self, trainer):
        rec = self.records.get(trainer.epoch)
        if rec is None or "map50_95" in rec:  # final_eval re-runs this hook at epoch + 1
            return
        m = trainer.metrics or {}
        rec["map50"] = float(m.get("metrics/mAP50(B)", 0.0))
        rec["map50_95"] = float(m.get("metrics/mAP50-95(B)", 0.0))
        rec["epoch_s"] = round(time.time() - self._t0, 3)
        self.log(f"edgekit: epoch {rec['epoch']}/{trainer.epochs}  loss {rec['loss'] or 0:.4g}  "
                 f"mAP50-95 {rec['map50_95']:.4f}  trainable {rec['trainable_params']:,}  "
                 f"{rec['train_s']:.1f}s train + {rec['epoch_s'] - rec['train_s']:.1f}s val")
        if self.on_epoch:
            self.on_epoch(trainer, rec)

    # --- optimizer ------------------------------------------------------------------------------------------
    def split_param_groups(self, optimizer, model):
        """Re-split Ultralytics' param groups by module group; all parameters stay in (frozen ones get no grad)."""
        groups = self.groups or module_groups(model)
        owner = {i: g for g, idx in groups.items() for i in idx}
        group_of = {id(p): owner.get(module_index(n), "head") for n, p in model.named_parameters()}
        new = []
        for g in optimizer.param_groups:
            rest = {k: v for k, v in g.items() if k != "params"}
            for name in groups:
                ps = [p for p in g["params"] if group_of.get(id(p), "head") == name]
                if ps:
                    mult = self.backbone_lr_mult if name == "backbone" else 1.0
                    new.append({**rest, "params": ps, "lr": rest["lr"] * mult, "module_group": name})
        optimizer.param_groups.clear()
        for g in new:
            optimizer.add_param_group(g)
        return optimizer

    def rewarm(self, trainer) -> list:
        """Scale the LR of groups unfrozen at a later epoch, linearly over REWARM_ITERS batches; returns what to undo."""
        since = self.unfrozen_since(trainer.epoch) if self.strategy.kind == "schedule" else {}
        if not since:
            return []
        nb = max(len(trainer.train_loader), 1)
        span = max(min(REWARM_ITERS, nb), 1)
        undo = []
        for g in trainer.optimizer.param_groups:
            e = since.get(g.get("module_group"))
            if e is not None:
                k = (trainer.epoch - e) * nb + self.batch_i + 1
                if k < span:
                    undo.append((g, g["lr"]))
                    g["lr"] = g["lr"] * k / span
        return undo

    def sync_ema(self, trainer) -> None:
        """Keep EMA copies of frozen weights and BN statistics bit-identical to the frozen ones."""
        ema = getattr(trainer, "ema", None)
        if not ema or not self.frozen:
            return
        if self._ema_id != id(ema.ema):
            msd, esd = _unwrap(trainer.model).state_dict(), ema.ema.state_dict()
            self._ema_pairs = [(esd[k], v) for k, v in msd.items()
                               if k in esd and v.dtype.is_floating_point and not any(a in k for a in ADAPTER_KEYS)
                               and (module_index(k) in self.frozen or any(a in k for a in ALWAYS_FROZEN))]
            self._ema_id = id(ema.ema)
        for e, m in self._ema_pairs:
            e.copy_(m)


def trainer_class():
    """Build the DetectionTrainer subclass at call time (Ultralytics is imported lazily)."""
    ultralytics()
    from ultralytics.models.yolo.detect import DetectionTrainer

    from . import ddp
    from .lora import apply_lora, has_lora, merge_checkpoint

    class EdgekitTrainer(DetectionTrainer):
        plan: Plan | None = None

        def __init__(self, cfg=None, overrides=None, _callbacks=None):
            from ultralytics.utils import DEFAULT_CFG

            super().__init__(DEFAULT_CFG if cfg is None else cfg, overrides, _callbacks)
            if _callbacks is not None and ddp.in_worker():  # a DDP worker, rebuilt from the parent's pickled state
                ddp.adopt_plan(self)

        def train(self):
            if self.ddp:  # this process launches the DDP workers
                ddp.before_launch(self)
            return super().train()

        def get_model(self, cfg=None, weights=None, verbose=True):
            s = self.plan.strategy if self.plan else None
            if not s or s.kind != "lora":
                return super().get_model(cfg, weights, verbose)
            model = super().get_model(cfg, None, verbose)
            wrapped = weights is not None and has_lora(weights)
            if weights is not None and not wrapped:
                model.load(weights)
            n = apply_lora(model, module_groups(model)["backbone"], s.lora_rank, s.lora_alpha)
            if wrapped:  # resuming: the checkpoint already carries adapters
                model.load(weights)
            self.plan.log(f"edgekit: LoRA r={s.lora_rank} alpha={s.lora_alpha:g} on {n} backbone convolutions")
            return model

        def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
            opt = super().build_optimizer(model, name, lr, momentum, decay, iterations)
            return self.plan.split_param_groups(opt, _unwrap(model)) if self.plan else opt

        def optimizer_step(self):
            undo = self.plan.rewarm(self) if self.plan else []
            try:
                super().optimizer_step()
            finally:
                for g, lr in undo:
                    g["lr"] = lr
            if self.plan:
                self.plan.sync_ema(self)

        def save_model(self):
            ok = super().save_model()
            s = self.plan.strategy if self.plan else None
            if s and s.kind == "lora" and self.best_fitness == self.fitness and self.best.exists():
                merge_checkpoint(self.best)  # best.pt: adapters folded into the convs; last.pt keeps them to resume
            return ok

    return EdgekitTrainer
