"""python -m ordermesh_cli"""

from ordermesh_cli.main import main

main()
