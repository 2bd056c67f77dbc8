"""The top floor: the ``syncguard`` command, the demo and the stack runner.

It may import every package of the project; nothing imports it (the import contracts in
``pyproject.toml`` say so and a test holds them).
"""
