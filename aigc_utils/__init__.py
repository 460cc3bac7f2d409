"""aigc_utils — the small shared package of the AIGC executable book.

``aigc_utils.core`` is the hand-written core every chapter shares (profiles, network policy, assets, the
checkpoint cache, the training loop and schedules, metrics and the referee, plotting, results, showing core
code on the page). Each other chapter module is **generated** from its notebook's ``#| export`` cells by
nbdev's exporter (``aigc-book export``); its first line names the notebook, which is the only place to edit it:

=====================  =======  ==============================================================
module                 chapter  what it adds
=====================  =======  ==============================================================
``basics``             01       a hand-written MLP: forward, backward, gradient check
``gan_math``           02       the GAN objective and step, D*, JSD, saturation, mode collapse and packing
``dcgan``              03       DCGAN generator and discriminator, R1 and the auxiliary classifier, sampling
``mlm``                04       WordPiece, BERT masking, masked-LM pretraining, probes and few-shot
``decoder``            05       a GPT decoder from scratch, KV cache, parity with GPT-2
``gpt2_finetune``      06       BPE, perplexity, sampling, the fine-tuning loop, Trainer
``finetune_cli``       A1       the same fine-tuning as a script for ``accelerate launch`` / ``torchrun``
``style``              07       Gatys style transfer and a fast feed-forward stylizer
``inpaint``            08       masks, classical fills, a U-Net inpainter and denoiser
``diffusion``          10       the forward process, DDPM/DDIM/Euler samplers, guidance, flow matching
``errata``             09       the source text's code blocks, as printed and fixed
=====================  =======  ==============================================================

A chapter module imports the core and, where its chapter builds on an earlier one, that chapter's module.
``runner``, ``cli`` and ``book`` execute the notebooks and build the website; nothing imports them.
Importing the package has no side effects: the network guard is switched on by
:func:`aigc_utils.core.profiles.setup_chapter` (and by the tests) when ``AIGC_OFFLINE=1``.
"""

__version__ = "0.2.0"
