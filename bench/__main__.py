"""``python -m bench``: Vault side by side with the ORM, Core, sqlalchemy-utils and pycasbin."""

from bench.run import main

main()
