"""python -m ordermesh_notification"""

from ordermesh_notification.app import service
from ordermesh_platform.server import run

if __name__ == "__main__":
    run(service)
