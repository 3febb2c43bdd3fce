"""A third-party plug-in as a user would write it: a task and a method, one file and one registration each.

Installed for the tests through a ``tuneforge.plugins`` entry point (see ``tests/plugins/test_plugins.py``);
nothing inside ``src/tuneforge`` names it.
"""
