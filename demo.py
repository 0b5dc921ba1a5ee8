"""`make demo`, `make recipe`, `make insertion`, `make diffusion` and `make so101`: record scripted demonstrations,
train a policy on them and roll it out, timing each step, then say what happened and where everything is.

    python demo.py                                   # the demo: about 10 minutes on a 2-core CPU
    python demo.py --recipe cpu --out recipe         # the CPU recipe: 50 rollouts, about 25 minutes
    python demo.py --recipe insertion --out insertion  # insertion: 50 rollouts, about 50 minutes
    python demo.py --recipe diffusion --out diffusion  # Diffusion Policy on the transfer cube, about 45 minutes
    python demo.py --recipe so101 --out so101        # one SO-101 arm in simulation picks and places, about 25 minutes

The transfer-cube recipes render the simulation at 96x128, insertion at 120x160 (the original:
480x640), all without shadows (record_sim_episodes.py --no_shadows), which more than halves the CPU
a frame costs; their images therefore differ from the original's, and they say so. The ACT recipes
train the same small ACT with a cosine learning rate, the demo on fewer episodes for fewer steps;
the Diffusion recipe a quarter-size UNet that predicts the clean chunk. --seed changes the recorded
episodes and the training, never the evaluation's poses (bench/learning.py runs several seeds).
A second run reuses the episodes, checkpoint and results the first made (delete the folder to start
over); an interrupted training is resumed. They evaluate the last checkpoint, not policy_best: the
validation loss (one random time step of each of 10 validation episodes, as the original) is too
noisy to pick a checkpoint by.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

from common.files import atomic_write
from constants import SIM_TASK_CONFIGS
from formats.hdf5 import episode_path

RENDER_NOTE = ("rendered without shadows (record_sim_episodes.py --no_shadows): a third of the CPU per frame, "
               "but the images differ from the original's wherever a shadow falls")
# The README's CPU recipe: a smaller ACT than the paper's (the trunk starts from random weights)
ACT_FLAGS = ('--policy_class', 'ACT', '--kl_weight', '10', '--chunk_size', '50', '--hidden_dim', '256',
             '--dim_feedforward', '1024', '--enc_layers', '2', '--dec_layers', '1', '--nheads', '8',
             '--no-pretrained_backbone')  # no ImageNet download attempt: runs offline
# docs/results.md: the clean chunk predicted (24x closer to the recorded one than noise prediction in
# 2,000 steps), ACT's 100-step chunk played in halves, 10 DDIM steps and a quarter-size UNet
DIFFUSION_FLAGS = ('--policy_class', 'Diffusion', '--prediction_type', 'sample', '--chunk_size', '100',
                   '--action_horizon', '50', '--num_inference_steps', '10', '--down_dims', '128', '256', '512')
# A linear warm-up over the first 1/WARMUP_SHARE of the steps, then a cosine decay to 0: on the first recipe's
# 1,600 steps it reached 44% where a constant learning rate reached 15% (README, "A recipe for a CPU")
ACT_TRAIN_FLAGS = ('--batch_size', '8', '--lr', '1e-4', '--lr_backbone', '1e-4', '--lr_schedule', 'cosine')
DIFFUSION_TRAIN_FLAGS = ('--batch_size', '8', '--lr', '1e-4', '--lr_schedule', 'cosine')
WARMUP_SHARE = 16
CHECKPOINT = 'policy_last.ckpt'  # the checkpoint evaluated
RESULT_FILE = 'result_policy_last.txt'  # what the evaluation of CHECKPOINT writes
TIMINGS_FILE = 'timings.json'  # <out>/: the seconds of each step the last time it ran
VIDEO_EPISODES = 2  # recorded episodes shown as a video and a joint plot (the demo)


@dataclasses.dataclass(frozen=True)
class Task:
    what: str  # the task in words
    placed: str  # what each rollout places at random
    stages: str  # the reward stages in words
    paper: str = None  # the success of the paper's recipe, as the original's README gives it (None: a task of ours)


def stages_text(task_name):
    """'1 = ..., 2 = ...,\n  3 = ..., 4 = ...' from the task's reward stages (constants.py)."""
    stages = [f'{r} = {text}' for r, text in enumerate(SIM_TASK_CONFIGS[task_name]['reward_stages'], 1)]
    half = (len(stages) + 1) // 2
    return ', '.join(stages[:half]) + ',\n  ' + ', '.join(stages[half:])


TASKS = {
    'sim_transfer_cube_scripted': Task(what='the bimanual cube transfer', placed='cube positions', paper='about 90%',
                                       stages=stages_text('sim_transfer_cube_scripted')),
    'sim_insertion_scripted': Task(what='the bimanual peg insertion', placed='peg and socket positions',
                                   paper='about 50%', stages=stages_text('sim_insertion_scripted')),
    'sim_so101_pick_place': Task(what='the SO-101 pick and place', placed='cube poses',
                                 stages=stages_text('sim_so101_pick_place')),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    task: str  # a key of TASKS
    num_episodes: int  # scripted demonstrations recorded and trained on
    image_size: tuple  # (H, W) recorded, trained on and rendered in evaluation
    num_steps: int  # training steps of batch 8
    num_rollouts: int  # evaluation rollouts
    videos: bool  # rollout videos and plots of the recorded episodes
    policy: str = 'ACT'  # --policy_class
    model: tuple = ACT_FLAGS  # the policy's flags
    training: tuple = ACT_TRAIN_FLAGS  # the optimiser's flags
    temporal_agg: bool = True  # evaluated with --temporal_agg
    action_horizon: int = None  # ACT without --temporal_agg: actions played per chunk (None: the whole chunk)


CUBE = 'sim_transfer_cube_scripted'
RECIPES = {
    'demo': Recipe(CUBE, num_episodes=20, image_size=(96, 128), num_steps=1400, num_rollouts=4, videos=True),
    'cpu': Recipe(CUBE, num_episodes=50, image_size=(96, 128), num_steps=2400, num_rollouts=50, videos=False),
    # the peg and the socket's hole are a few pixels wide at 96x128: insertion keeps 120x160; played
    # chunk by chunk (over three seeds 51% against 43% with ensembling, docs/results.md)
    'insertion': Recipe('sim_insertion_scripted', num_episodes=50, image_size=(120, 160), num_steps=6000,
                        num_rollouts=50, videos=False, temporal_agg=False),
    # the CPU recipe's episodes; each chunk's second half is played before the next query, without ensembling;
    # 4,000 steps (three seeds: 91%, 84-98%, where 2,000 steps reached 54%, docs/results.md)
    'diffusion': Recipe(CUBE, num_episodes=50, image_size=(96, 128), num_steps=4000, num_rollouts=50, videos=False,
                        policy='Diffusion', model=DIFFUSION_FLAGS, training=DIFFUSION_TRAIN_FLAGS,
                        temporal_agg=False),
    # one simulated SO-101 arm, its front and wrist cameras, at 30 Hz (so101_sim/); 200 episodes; 25 actions of each
    # 50-action chunk played, then a new query (three seeds: 97%, 94-100%; seeds 0 and 2 chunk by chunk 82% and 92%,
    # seed 0 ensembled 90%, docs/results.md)
    'so101': Recipe('sim_so101_pick_place', num_episodes=200, image_size=(96, 128), num_steps=2400, num_rollouts=50,
                    videos=False, temporal_agg=False, action_horizon=25),
}


def full_recipe_intro(task):
    if task.paper:
        return f"The ACT paper's recipe ({task.paper} success; hours on a GPU, far longer on a CPU), with shadows:"
    return "The paper's ACT at full size (hours on a GPU, far longer on a CPU; no published figure for this task):"


def full_recipe(task):
    """The original's commands for `task`: record at 480x640, train the paper's ACT, evaluate."""
    train = f'python imitate_episodes.py --task_name {task} --policy_class ACT'
    return f'python record_sim_episodes.py --task_name {task}\n  {train}\n  {train} --eval --temporal_agg'


def run(step, command, env=None):
    """Run one of the project's scripts, showing the exact command a user can rerun -> seconds."""
    shown = ' '.join(f'{k}={v}' for k, v in (env or {}).items())
    print(f'\n=== {step}\n$ {shown + " " if shown else ""}python {" ".join(command)}\n', flush=True)
    start = time.perf_counter()
    returncode = subprocess.run([sys.executable, *command], env={**os.environ, **(env or {})}).returncode
    if returncode != 0:
        raise SystemExit(f'demo: this step stopped (exit status {returncode}); run the same command again to go on '
                         f'(recorded episodes and an interrupted training are picked up where they stopped)')
    return time.perf_counter() - start


def describe(recipe):
    """A recipe in words, for --help."""
    videos = ' with videos' if recipe.videos else ''
    horizon = f' playing {recipe.action_horizon} actions a chunk' if recipe.action_horizon else ''
    return (f'{recipe.task}, {recipe.num_episodes} episodes at {"x".join(map(str, recipe.image_size))}, '
            f'{recipe.policy}, {recipe.num_steps} steps, {recipe.num_rollouts} rollouts{horizon}{videos}')


def image_size(args):
    """The recipe's (H, W) as command-line words."""
    return [str(n) for n in args['image_size']]


def folders(args):
    return os.path.join(args['out'], args['task']), os.path.join(args['out'], 'ckpt')


def record(args):
    dataset_dir, _ = folders(args)
    size = image_size(args)
    seconds = run(f"Recording {args['num_episodes']} scripted demonstrations ({'x'.join(size)}, no shadows)",
                  ['record_sim_episodes.py', '--task_name', args['task'], '--dataset_dir', dataset_dir,
                   '--num_episodes', str(args['num_episodes']), '--image_size', *size,
                   '--num_workers', str(args['workers']), '--seed', str(args['seed']), '--no_shadows'])
    if args['videos']:
        for i in range(min(VIDEO_EPISODES, args['num_episodes'])):
            seconds += run(f'Video and joint plot of episode {i}',
                           ['visualize_episodes.py', '--dataset_dir', dataset_dir, '--episode_idx', str(i)])
    return seconds


def check_episodes(args):
    dataset_dir, num_episodes = folders(args)[0], args['num_episodes']
    missing = [i for i in range(num_episodes) if not os.path.isfile(episode_path(dataset_dir, i))]
    if missing:
        raise SystemExit(f'demo: {dataset_dir} lacks episode_{missing[0]}.hdf5; record the demonstrations first '
                         f"with: python record_sim_episodes.py --task_name {args['task']} --dataset_dir {dataset_dir} "
                         f'--num_episodes {num_episodes} --image_size {" ".join(image_size(args))} --no_shadows')


def train(args):
    dataset_dir, ckpt_dir = folders(args)
    check_episodes(args)
    if os.path.isfile(os.path.join(ckpt_dir, CHECKPOINT)):
        print(f'\n=== Training: {ckpt_dir}/{CHECKPOINT} exists, reusing it (delete the folder to retrain)')
        return 0.0
    steps = str(args['num_steps'])
    resume = ['--resume'] if os.path.isfile(os.path.join(ckpt_dir, 'training_state.pt')) else []
    return run(f"Training {args['policy']} for {steps} steps on {args['num_episodes']} demonstrations",
               ['imitate_episodes.py', '--task_name', args['task'], '--ckpt_dir', ckpt_dir,
                '--dataset_dir', dataset_dir, '--num_episodes', str(args['num_episodes']), *args['model'],
                *(['--action_horizon', str(args['action_horizon'])] if args['action_horizon'] else []),
                *args['training'], '--seed', str(args['seed']), '--num_steps', steps,
                '--warmup_steps', str(args['num_steps'] // WARMUP_SHARE),
                '--validate_every', str(max(1, args['num_steps'] // 8)), '--save_every', steps, *resume])


def evaluate(args):
    _, ckpt_dir = folders(args)
    if os.path.isfile(os.path.join(ckpt_dir, RESULT_FILE)):
        print(f'\n=== Evaluation: {ckpt_dir}/{RESULT_FILE} exists, reusing it (delete it to evaluate again)')
        return 0.0
    video = [] if args['videos'] else ['--no_video']
    placed = TASKS[args['task']].placed
    how, agg = ('with temporal ensembling', ['--temporal_agg']) if args['temporal_agg'] else (played(args), [])
    return run(f"Evaluating: {args['num_rollouts']} rollouts {how}, new random {placed}",
               ['imitate_episodes.py', '--eval', '--ckpt_dir', ckpt_dir, '--eval_ckpt', CHECKPOINT, *agg,
                '--num_rollouts', str(args['num_rollouts']), '--eval_workers', str(args['workers']), *video],
               env={'OMP_NUM_THREADS': '1'})  # one thread per rollout worker on a 2-core CPU


def played(args):
    """How the evaluation plays the chunks without temporal ensembling, in words."""
    if args['action_horizon']:
        return f"playing {args['action_horizon']} actions of each chunk, then a new one"
    return 'chunk by chunk'


def report(args, seconds):
    dataset_dir, ckpt_dir = folders(args)
    with open(os.path.join(ckpt_dir, RESULT_FILE)) as f:
        head = f.read().rsplit('\n\n', 1)[0]  # the summary, then the list of returns
    summary = '\n'.join('  ' + line if line else '' for line in head.rsplit('\n', 1)[0].strip().split('\n'))
    times = ', '.join(f'{step} {s / 60:.1f} min' for step, s in seconds.items())
    videos = ', '.join(os.path.join(ckpt_dir, f'video{i}.mp4') for i in range(args['num_rollouts']))
    where_videos = f'\n  rollout videos     {videos}' if args['videos'] else ''
    task = TASKS[args['task']]
    article = 'an' if args['policy'][0] in 'AEIOU' else 'a'
    curves = os.path.join(ckpt_dir, f"train_val_loss_seed_{args['seed']}.png")
    metrics = os.path.join(ckpt_dir, f"train_metrics_seed_{args['seed']}.png")
    print(f"""
=== Finished in {sum(seconds.values()) / 60:.1f} min ({times})
What happened: {args['num_episodes']} scripted demonstrations of {task.what} were recorded in
  {dataset_dir}, {article} {args['policy']} policy learned from them for {args['num_steps']} steps, and it was
  rolled out in simulation from new random {task.placed}.
  The frames were {'x'.join(image_size(args))} (the original's are 480x640) and {RENDER_NOTE}.
Results:
{summary}
  Reward stages: {task.stages}.
  "Success rate" is the share of rollouts reaching stage 4; "Reward >= r" counts the rollouts that
  reached stage r.
Where to look:{where_videos}
  training curves    {curves} (and the other terms),
                     {metrics}, {os.path.join(ckpt_dir, 'metrics.jsonl')}
  results            {os.path.join(ckpt_dir, RESULT_FILE)}
  checkpoints        {os.path.join(ckpt_dir, CHECKPOINT)}, policy_best.ckpt, dataset_stats.pkl
{full_recipe_intro(task)}
  {full_recipe(args['task'])}
The evaluation report (results, rollout videos, training curves, config; open it in a browser):
  {os.path.join(ckpt_dir, 'report.html')}""")


def read_timings(out):
    """<out>/timings.json -> {step: seconds} of the steps that have run ({} before the first)."""
    path = os.path.join(out, TIMINGS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(args):
    timings = read_timings(args['out'])
    seconds = {}
    for step, work in (('recording', record), ('training', train), ('evaluation', evaluate)):
        seconds[step] = work(args)
        if seconds[step]:  # a step that reused earlier results keeps the time it took then
            timings[step] = seconds[step]
            atomic_write(os.path.join(args['out'], TIMINGS_FILE), lambda f: json.dump(timings, f, indent=1), mode='w')
    report(args, seconds)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--recipe', choices=sorted(RECIPES), default='demo',
                        help='; '.join(f'{name}: {describe(recipe)}' for name, recipe in RECIPES.items()))
    parser.add_argument('--out', default='demo', help='folder for the episodes (<out>/<task>) and the run (<out>/ckpt)')
    parser.add_argument('--num_episodes', type=int, help="episodes to record and train on (default: the recipe's)")
    parser.add_argument('--num_steps', type=int, help="training steps of batch 8 (default: the recipe's)")
    parser.add_argument('--num_rollouts', type=int, help="evaluation rollouts (default: the recipe's)")
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the recorded episodes and of the training (the evaluation keeps the original\'s)')
    parser.add_argument('--workers', type=int, default=2,
                        help='processes recording and evaluating side by side (1 when two recipes share 2 cores)')
    args = vars(parser.parse_args(argv))
    recipe = dataclasses.asdict(RECIPES[args['recipe']])
    for key, least in (('num_episodes', 2), ('num_steps', 1), ('num_rollouts', 1), ('workers', 1)):
        if args[key] is not None and args[key] < least:
            parser.error(f'--{key} must be at least {least}, got {args[key]}')
    return {**recipe, **{k: v for k, v in args.items() if v is not None}}


if __name__ == '__main__':
    main(parse_args())
