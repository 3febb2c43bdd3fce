"""The studio's pages, one module each; ``PAGES`` is the list the app mounts (and the menu, in order)."""

from tuneforge.studio.pages import compare, data, deploy, playground, recipe, report, review, run, runs

PAGES = (runs, run, report, compare, recipe, data, playground, review, deploy)
