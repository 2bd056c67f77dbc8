"""``python -m syncguard.cli``: the same command as the ``syncguard`` console script."""

from syncguard.cli.main import main

main()
