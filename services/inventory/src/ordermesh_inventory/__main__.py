"""python -m ordermesh_inventory"""

from ordermesh_inventory.app import service
from ordermesh_platform.server import run

if __name__ == "__main__":
    run(service)
