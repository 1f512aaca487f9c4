"""python -m ordermesh_order"""

from ordermesh_order.app import service
from ordermesh_platform.server import run

if __name__ == "__main__":
    run(service)
