"""The values a task takes from its data module, declared once for every diffx run.

LightningCLI builds the data module and the task of a run from one config.
:func:`link_data_to_model` tells its parser which of the task's arguments come from the data
module, so a config writes each value once (under ``data``) and no task reaches into
``trainer.datamodule``. jsonargparse skips a link when the chosen data module lacks its source
or the chosen task lacks its target, so each link below acts only where both ends exist:

=============================  ===========================  =================  ===========
data module                    task argument                task               applied on
=============================  ===========================  =================  ===========
``init_args.sample_rate``      ``sample_rate``              every task with    parse
                                                            a sample rate
``init_args.sample_rate``      the encoder's, the cascade's StyleTransfer,     parse
                                                            PhaseAlignment
``init_args.sample_rate``      (its own ``effect`` and      (the data module)  parse
                               ``reference_effect``)
``init_args.frame_rate_hz``,   ``frame_rate_hz``,           TimbreTransfer     parse
``init_args.crepe_model``      ``crepe_model``
``chain`` (the instance)       ``data_chain``               StyleTransfer      instantiate
``statistics`` (its method)    ``training_statistics``      TimbreTransfer,    instantiate
                                                            GANPostFilter
``measurement`` (its method)   ``measurement``              PhaseAlignment     instantiate
=============================  ===========================  =================  ===========

The chain is linked as the instance the data module made (a chain of plug-ins is loaded once).
Training statistics and the measured transfer function exist only once the data is set up
(features computed from files, the effect run on the dry, a response estimated): after
instantiation, when links apply. What is linked for them is the data module's method that
returns them, setting the data up on its first call, and the task calls it in ``setup`` or
``on_fit_start``, after Lightning's ``prepare_data`` and ``setup``. Computing them when the
data module is built would read every file (and run CREPE, WORLD, the effect) before a
mistyped option could be reported, and on every DDP process before ``prepare_data`` has
cached the features on one.

In Python (a notebook), hand the same values over yourself::

    data = TimbreDataModule(instrument="violin")
    task = TimbreTransfer(sample_rate=data.sample_rate, training_statistics=data.statistics)
    pl.Trainer(max_steps=100).fit(task, datamodule=data)

    data = StyleTransferDataModule(...)
    task = StyleTransfer(sample_rate=data.sample_rate, data_chain=data.chain)

    data = PostFilterDataModule("violin_ddsp")
    task = GANPostFilter(training_statistics=data.statistics)

    data = PhaseAlignmentDataModule(dry="guitar_clean", effect=...)
    task = PhaseAlignment(data.sample_rate, measurement=data.measurement)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

DATA_TO_MODEL_LINKS = (
    # (source in the data module, target in the task, applied on)
    ("data.init_args.sample_rate", "model.init_args.sample_rate", "parse"),
    # The same rate for the networks and effects built inside the task and the data: the
    # style encoder, the allpass cascade, the device an effect-modeling or anti-aliasing run
    # learns. (The effects in a chain's list cannot be reached by a link: a chain at another
    # rate than the data's is refused by the task, naming it.)
    ("data.init_args.sample_rate", "model.init_args.encoder.init_args.sample_rate", "parse"),
    ("data.init_args.sample_rate", "model.init_args.cascade.init_args.sample_rate", "parse"),
    ("data.init_args.sample_rate", "data.init_args.effect.init_args.sample_rate", "parse"),
    ("data.init_args.sample_rate", "data.init_args.reference_effect.init_args.sample_rate",
     "parse"),  # fmt: skip
    # The timbre model's frames and pitch tracker are those its training features were made
    # with (the task also checks the data's statistics against them).
    ("data.init_args.frame_rate_hz", "model.init_args.frame_rate_hz", "parse"),
    ("data.init_args.crepe_model", "model.init_args.crepe_model", "parse"),
    ("data.chain", "model.init_args.data_chain", "instantiate"),
    ("data.statistics", "model.init_args.training_statistics", "instantiate"),
    ("data.measurement", "model.init_args.measurement", "instantiate"),
)
"""Every link of :func:`link_data_to_model` (see the module notes)."""

HANDED_OVER = tuple(
    target.rsplit(".", 1)[-1] for _, target, apply_on in DATA_TO_MODEL_LINKS
    if apply_on == "instantiate"
)  # fmt: skip
"""The task arguments that receive an object of the built data module (a chain, a bound
method): never hyperparameters (:meth:`diffx.tasks.base.AudioTask.save_hyperparameters`)."""


def link_data_to_model(parser: ArgumentParser) -> None:
    """Declare on a LightningCLI ``parser`` (with ``data`` and ``model`` in subclass mode)
    every value a task takes from its data module (:data:`DATA_TO_MODEL_LINKS`).

    Call it from the CLI's ``add_arguments_to_parser``. ``parse`` links copy a config value
    (one sample rate per run, the data's); ``instantiate`` links hand the built data module's
    attribute to the task when it is built.
    """
    for source, target, apply_on in DATA_TO_MODEL_LINKS:
        parser.link_arguments(source, target, apply_on=apply_on)
