"""GatewaySMTP skips aiosmtpd's SMTP.__init__ (see there): it must still set every attribute
that __init__ sets, or an aiosmtpd upgrade could leave inherited code reading a missing one."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiosmtpd.smtp import SMTP

from gateway.config import config_from_dict
from gateway.smtp.session import GatewaySMTP


def test_session_sets_every_attribute_of_aiosmtpd_init() -> None:
    async def build() -> tuple[set[str], set[str]]:
        config = config_from_dict({})
        reference = SMTP(object(), hostname="x", loop=asyncio.get_running_loop())
        ours = GatewaySMTP(
            config.smtp, cast(Any, object()), cast(Any, None), cast(Any, None), None, 1.0
        )
        return set(vars(reference)), set(vars(ours))

    reference, ours = asyncio.run(build())
    assert reference - ours == set()
