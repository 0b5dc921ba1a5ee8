"""What a training run reports as it goes: the original's console messages, the tqdm bar,
metrics.jsonl and the metric curves, optional TensorBoard and wandb (rank 0 only)."""
import os

from tqdm import tqdm

from training.metrics import MetricsFile, TensorBoardLog, plot_metrics


def compute_dict_mean(epoch_dicts):
    """Mean of each key over a list of dicts of numbers or tensors."""
    return {k: sum(d[k] for d in epoch_dicts) / len(epoch_dicts) for k in epoch_dicts[0]}


class Log:
    """Console (the original's messages), tqdm bar, metrics.jsonl and the metric curves, optional
    TensorBoard and wandb; on rank 0 only."""

    def __init__(self, config, trainer):
        self.enabled = config['rank'] == 0
        self.trainer = trainer
        self.unit_name = trainer.unit_name
        self.seed, self.ckpt_dir = config['seed'], config['ckpt_dir']
        self.print_every = config['validate_every'] if trainer.step_mode else 1
        self.bar = tqdm(total=trainer.num_units, initial=trainer.progress.unit, desc=self.unit_name,
                        disable=not self.enabled)
        self.outputs, self.metrics, self.wandb = [], None, None
        if self.enabled:
            p = trainer.progress
            self.metrics = MetricsFile(config['ckpt_dir'], p.step if config['resume'] else None,
                                       [u for u, _ in p.validation_history])
            self.outputs.append(self.metrics)
            if config['tensorboard']:
                self.outputs.append(TensorBoardLog(config['ckpt_dir']))
            if config['wandb']:
                self.wandb = init_wandb(config)
        self.val_loss, self.postfix = None, {}

    def record(self, record):
        for output in self.outputs:
            output.write(record)
        if self.wandb:
            self.wandb.log({f"{record['split']}/{k}": v for k, v in record.items() if k not in ('split', 'step')},
                           step=record['step'])

    def step(self, record):
        """One optimizer step's metrics (Trainer.train_step)."""
        if not self.enabled:
            return
        self.record(record)
        self.postfix.update(loss=f"{record['loss']:.4f}", grad=f"{record['grad_norm']:.3g}",
                            lr=f"{record['lr']:.2g}", samples_s=f"{record['samples_per_s']:.1f}")
        self.bar.set_postfix(self.postfix)

    def validation(self, unit, summary):
        if not self.enabled:
            return
        tqdm.write(f'\n{self.unit_name.capitalize()} {unit}')
        tqdm.write(f"Val loss:   {summary['loss']:.5f}")
        tqdm.write(' '.join(f'{k}: {v:.3f}' for k, v in summary.items()))
        self.val_loss = summary['loss']
        self.postfix['val'] = f'{self.val_loss:.4f}'
        self.record({'split': 'val', 'step': self.trainer.progress.step, 'unit': unit, **summary})

    def train(self, unit, summary):
        if not self.enabled:
            return
        self.bar.update(1)
        if (unit + 1) % self.print_every == 0:
            recent = [s for u, s in self.trainer.progress.train_history[-self.print_every:]]
            mean = compute_dict_mean(recent)
            tqdm.write(f"Train loss: {mean['loss']:.5f}")
            tqdm.write(' '.join(f'{k}: {v:.3f}' for k, v in mean.items()))

    def plot(self):
        if self.metrics is not None:
            plot_metrics(self.metrics.records, self.ckpt_dir, self.seed)

    def close(self):
        self.bar.close()
        for output in self.outputs:
            output.close()
        if self.wandb:
            self.wandb.finish()


def init_wandb(config):
    try:
        import wandb
    except ImportError:
        raise ImportError('--wandb needs the wandb package: pip install wandb') from None
    settings = {k: v for k, v in config.items() if k not in ('policy_config', 'dataset_record')}
    # WANDB_MODE=offline writes the run under ./wandb (or WANDB_DIR) for a later `wandb sync`
    return wandb.init(project='act', name=os.path.basename(os.path.normpath(config['ckpt_dir'])),
                      config=settings | config['policy_config'])
