"""What the gateway does, one module per feature (docs/architecture.md).

Feature modules never import each other: a feature that needs another's
capability receives it as a constructor argument typed by a Protocol in
base.py; composition.py builds them all and wires them together.
"""
