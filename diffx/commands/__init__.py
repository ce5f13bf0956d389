"""The command front ends of the ``diffx`` console script, one module per command (listed in
:data:`diffx.commands.main.COMMANDS`): they parse options, check what the user gave, call the
library and report. Library code lives in the layers below; nothing imports a command module
except :mod:`diffx.commands.main`."""
