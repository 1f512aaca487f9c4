"""python -m ordermesh_payment"""

from ordermesh_payment.app import service
from ordermesh_platform.server import run

if __name__ == "__main__":
    run(service)
