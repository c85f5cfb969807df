"""Training machinery: the run (``run.train``), callbacks, checkpoints, devices, run directories, runs read back.

Importing any of it quiets what Lightning says that does not apply to gansuite's manual schedule; the
build of a model (``gansuite.config.build``) imports it too, so gansuite-sample and gansuite-eval are
as quiet as gansuite-train.
"""

import logging
import warnings

# Lightning warnings that do not apply to gansuite's manual schedule: checkpoints are taken after
# a whole step by design, and a resumed run writes into its own new run directory.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*is deprecated")
# The EMA generator is kept in eval mode on purpose.
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")


class _QuietLightning(logging.Filter):
    """Drops Lightning's lines that say nothing to a gansuite user: an advertisement, and "max_steps=N reached"
    with N in optimizer steps (gansuite prints "step S of S" in its own steps instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡 Tip:") or message.startswith("`Trainer.fit` stopped: `max_steps="))


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietLightning())
