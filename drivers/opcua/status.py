"""OPC UA status codes to the gateway's quality codes (OPC UA Part 4, 7.34 and Part 6, annex A).

The two top bits of a status code give its severity (00 good, 01 uncertain, 10 bad); the next 14 its
sub-code; the low 16 bits are flags (overflow, limits, info type) that do not change the meaning and
are masked off. Bad codes that mean "the path to the value is broken" become COMM_FAILURE, so that a
platform can tell a dead link from a broken sensor.
"""

from __future__ import annotations

from asyncua.ua import StatusCodes

from core.types import Quality

SEVERITY_MASK = 0xC000_0000
CODE_MASK = 0xFFFF_0000
UNCERTAIN_SEVERITY = 0x4000_0000

COMM_FAILURE_CODES = frozenset(getattr(StatusCodes, name) for name in (
    "BadCommunicationError", "BadNotConnected", "BadTimeout", "BadServerNotConnected", "BadShutdown",
    "BadNoCommunication", "BadConnectionClosed", "BadSecureChannelClosed", "BadServerHalted",
    "BadSessionClosed", "BadRequestTimeout", "BadConnectionRejected",
))
BAD_QUALITIES = {
    StatusCodes.BadSensorFailure: Quality.SENSOR_FAULT,
    StatusCodes.BadOutOfService: Quality.MAINTENANCE,
    StatusCodes.BadOutOfRange: Quality.OUT_OF_RANGE,
    StatusCodes.BadWaitingForInitialData: Quality.NO_VALUE,
    StatusCodes.BadConfigurationError: Quality.DEVICE_ERROR,
    StatusCodes.BadNodeIdUnknown: Quality.DEVICE_ERROR,
    StatusCodes.BadDeviceFailure: Quality.DEVICE_ERROR,
}


def quality_of(status: int) -> Quality:
    """The quality code for a status code (an int, as in `StatusCode.value`)."""
    severity = status & SEVERITY_MASK
    if severity == 0:
        return Quality.GOOD
    if severity == UNCERTAIN_SEVERITY:
        return Quality.UNCERTAIN
    code = status & CODE_MASK
    if code in COMM_FAILURE_CODES:
        return Quality.COMM_FAILURE
    return BAD_QUALITIES.get(code, Quality.DEVICE_ERROR)  # severity 11 is reserved: bad as well


def status_name(status: int) -> str:
    """`BadSensorFailure (0x808C0000)`, for logs and events."""
    for name in dir(StatusCodes):
        if not name.startswith("_") and getattr(StatusCodes, name) == status & CODE_MASK:
            return f"{name} (0x{status:08X})"
    return f"0x{status:08X}"
