"""The promised wire types for Python, generated from ``schemas/promised.fbs``.

``promised_generated`` is written by ``flatc --python --gen-onefile`` (run
``schemas/generate.sh``) and never edited by hand, so that the schema, not
this example, is the contract: ``cargo test -p promised-schemas --test drift``
fails when it differs from what the pinned compiler makes of the schema.
Import it as ``from promised_wire import promised_generated as wire``.
"""
