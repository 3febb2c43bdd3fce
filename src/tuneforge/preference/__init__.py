"""Preference tuning: the losses (DPO family, reward models), sequence log-probabilities with the adapter
switched off as the reference, rewards for on-policy RL, and the judge behind the win rate.

The tasks that use them live in ``tuneforge.tasks`` (``preference``, ``reward_model``, ``rl``); they train
through the one loop in ``tuneforge.train.loop`` like every other task.
"""
