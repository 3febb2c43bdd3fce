"""Preference tuning: the losses (DPO family, reward models), the judge behind the win rate, step meters.

The tasks that use them live in ``tuneforge.tasks`` (``preference``, ``reward_model``, ``rl``), with the
answer log-probabilities and the adapter-off reference in ``tuneforge.tasks.answers`` and the RL rewards in
``tuneforge.tasks.rewards`` (inside the tasks package because they build on ``tasks.base``); they train
through the one loop in ``tuneforge.train.loop`` like every other task.
"""
