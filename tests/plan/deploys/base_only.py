"""The base role alone, validated like deploy.py does: for plan tests of that role."""

from pyinfra import host

from roles import base
from roles.base.settings import BaseSettings
from roles.common.settings import validate_host

validate_host(host, [BaseSettings])
base.configure()
