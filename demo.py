"""The end of `make demo`: train a small ACT on the recorded demonstrations, roll it out, and say
where everything is. Sized to finish in a few minutes on a 2-core CPU; the full recipe is printed.

    python demo.py --dataset_dir demo/sim_transfer_cube_scripted --num_episodes 2 --ckpt_dir demo/ckpt
"""
import argparse
import os
import subprocess
import sys
import time

from episodes import episode_path

### Demo settings: a small ACT on small images, so training takes minutes on a CPU
TASK = 'sim_transfer_cube_scripted'
IMAGE_SIZE = ('120', '160')  # (H, W) the policy sees: training resizes the recorded frames
MODEL_FLAGS = ['--policy_class', 'ACT', '--kl_weight', '10', '--chunk_size', '50', '--hidden_dim', '128',
               '--dim_feedforward', '512', '--enc_layers', '2', '--dec_layers', '1', '--nheads', '8',
               '--no-pretrained_backbone']  # no ImageNet download attempt: the demo runs offline
TRAIN_FLAGS = ['--batch_size', '8', '--lr', '1e-4', '--seed', '0']
FULL_RECIPE = ('python record_sim_episodes.py --task_name sim_transfer_cube\n'
               '  python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT\n'
               '  python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT --eval --temporal_agg')
REWARD_STAGES = ('1 = the right gripper touches the cube, 2 = it lifts the cube,\n'
                 '  3 = the left gripper touches it too, 4 = the left gripper holds it alone (success)')


def run(step, command):
    """Run one of the project's scripts, showing the exact command a user can rerun."""
    print(f'\n=== {step}\n$ {" ".join(command)}\n', flush=True)
    start = time.perf_counter()
    returncode = subprocess.run([sys.executable, *command]).returncode
    if returncode != 0:
        raise SystemExit(f'demo: this step stopped (exit status {returncode}); run `make demo` again to go on '
                         f'(recorded episodes and an interrupted training are picked up where they stopped)')
    return time.perf_counter() - start


def check_episodes(dataset_dir, num_episodes):
    missing = [i for i in range(num_episodes) if not os.path.isfile(episode_path(dataset_dir, i))]
    if missing:
        raise SystemExit(f'demo: {dataset_dir} lacks episode_{missing[0]}.hdf5; record the demonstrations first '
                         f'(`make demo` does) with: python record_sim_episodes.py --task_name {TASK} '
                         f'--dataset_dir {dataset_dir} --num_episodes {num_episodes}')


def common_flags(args):
    return ['--task_name', TASK, '--ckpt_dir', args['ckpt_dir'], '--dataset_dir', args['dataset_dir'],
            '--num_episodes', str(args['num_episodes']), '--image_size', *IMAGE_SIZE, *MODEL_FLAGS]


def train(args):
    if os.path.isfile(os.path.join(args['ckpt_dir'], 'policy_best.ckpt')):
        print(f"\n=== Training: {args['ckpt_dir']}/policy_best.ckpt exists, reusing it (delete the folder to retrain)")
        return 0.0
    steps = str(args['num_steps'])
    resume = ['--resume'] if os.path.isfile(os.path.join(args['ckpt_dir'], 'training_state.pt')) else []
    return run(f"Training a small ACT for {steps} steps on {args['num_episodes']} demonstrations "
               f"({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} images)",
               ['imitate_episodes.py', *common_flags(args), *TRAIN_FLAGS, '--num_steps', steps,
                '--validate_every', str(max(1, args['num_steps'] // 10)), '--save_every', steps, *resume])


def evaluate(args):
    return run(f"Evaluating: {args['num_rollouts']} rollouts with new random cube positions",
               ['imitate_episodes.py', *common_flags(args), '--eval', '--num_rollouts', str(args['num_rollouts'])])


def report(args, train_s, eval_s):
    ckpt_dir = args['ckpt_dir']
    with open(os.path.join(ckpt_dir, 'result_policy_best.txt')) as f:
        head = f.read().rsplit('\n\n', 1)[0]  # the summary, then the list of returns
    summary = '\n'.join('  ' + line if line else '' for line in head.rsplit('\n', 1)[0].strip().split('\n'))
    videos = ', '.join(os.path.join(ckpt_dir, f'video{i}.mp4') for i in range(args['num_rollouts']))
    print(f"""
=== Demo finished (training {train_s / 60:.1f} min, evaluation {eval_s / 60:.1f} min)
What happened: scripted demonstrations of the bimanual cube transfer were recorded in
  {args['dataset_dir']} (with their videos and joint plots), an ACT policy learned from them for a few
  minutes, and it was rolled out in simulation from new random cube positions.
Results:
{summary}
  Reward stages: {REWARD_STAGES}.
  "Success rate" is the share of rollouts reaching stage 4; "Reward >= r" counts the rollouts that
  reached stage r. A policy trained for minutes on a few demonstrations moves like the demonstrations
  but rarely grasps the cube: expect 0% success here.
Where to look:
  rollout videos     {videos}
  training curves    {os.path.join(ckpt_dir, 'train_val_loss_seed_0.png')} (and _l1_, _kl_),
                     {os.path.join(ckpt_dir, 'train_metrics_seed_0.png')}, {os.path.join(ckpt_dir, 'metrics.jsonl')}
  results            {os.path.join(ckpt_dir, 'result_policy_best.txt')}
  checkpoints        {os.path.join(ckpt_dir, 'policy_best.ckpt')}, policy_last.ckpt, dataset_stats.pkl
The full recipe (about 90% success in the paper; hours on a GPU, far longer on a CPU):
  {FULL_RECIPE}
The README's CPU recipe (120x160 images, a smaller ACT) reached 82% success in about 70 minutes.
The evaluation report (results, rollout videos, training curves, config; open it in a browser):
  {os.path.join(ckpt_dir, 'report.html')}""")


def main(args):
    check_episodes(args['dataset_dir'], args['num_episodes'])
    train_s = train(args)
    eval_s = evaluate(args)
    report(args, train_s, eval_s)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset_dir', required=True, help='folder of the recorded episode_{i}.hdf5')
    parser.add_argument('--num_episodes', type=int, default=2, help='episodes to train on (at least 2)')
    parser.add_argument('--ckpt_dir', default=os.path.join('demo', 'ckpt'), help='folder for the checkpoints and results')
    parser.add_argument('--num_steps', type=int, default=1000, help='training steps (batches of up to 8 samples)')
    parser.add_argument('--num_rollouts', type=int, default=3, help='evaluation rollouts')
    main(vars(parser.parse_args()))
