"""aigc_utils — the small shared package of the AIGC executable book.

Modules: ``profiles`` (profiles, device, seeding), ``assets`` (offline datasets, corpora, weights),
``checkpoints`` (load-else-train cache), ``plotting``, ``results`` (a chapter's metrics and bars),
``runner`` / ``cli`` (``aigc-book``), and one module per chapter topic.
"""

from .net import forbid_network, offline

__version__ = "0.1.0"

if offline():  # AIGC_OFFLINE=1: prove the offline paths by making the network impossible
    forbid_network()
