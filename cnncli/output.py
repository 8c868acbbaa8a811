"""The renderer's old home, kept so ``from cnncli.output import …`` keeps working: everything
now lives in the ``cnncli.render`` package."""

from cnncli.render import *  # noqa: F401,F403
from cnncli.render import __all__  # noqa: F401
from cnncli.render.document import _cell, headers as _headers, numeric as _numeric, summary_lines as _summary_lines  # noqa: F401
