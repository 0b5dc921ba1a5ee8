"""Dynamixel Protocol 2.0: our packet code against the SDK and the manual, and the direct driver
against the servo-bus emulator on a pseudo-terminal (real packets both ways)."""
import time

import numpy as np
import pytest

from real_robot import protocol as P
from real_robot import settings
from real_robot.bots import RobotFault
from real_robot.dynamixel import DynamixelBot, DynamixelBus
from real_robot.servo_bus import ServoCommError, ServoError
from real_robot.emulator import ServoBusEmulator


pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini


@pytest.fixture
def emulator():
    bus = ServoBusEmulator()
    yield bus
    bus.close()


@pytest.fixture
def bot(emulator):
    arm = DynamixelBot('puppet_left', emulator.port, settings.PUPPET_MODEL)
    yield arm
    arm.close()


def test_crc_matches_sdk_on_random_data():
    from dynamixel_sdk import Protocol2PacketHandler
    sdk = Protocol2PacketHandler()
    rng = np.random.default_rng(0)
    for length in range(1, 60):
        data = rng.integers(0, 256, size=length).tolist()
        assert P.crc16(bytes(data)) == sdk.updateCRC(0, data, length)


def test_ping_packet_matches_the_protocol_manual_example():
    assert P.build_packet(1, P.PING) == bytes.fromhex('FFFFFD0001030001194E')


def test_byte_stuffing_round_trip_and_length():
    params = b'\xff\xff\xfd\x01\xff\xff\xfd\xfd'
    packet = P.build_packet(3, P.WRITE, params)
    assert packet.count(b'\xff\xff\xfd\xfd') == 2  # both occurrences stuffed
    length = int.from_bytes(packet[5:7], 'little')
    assert length == len(packet) - 7
    assert P.parse_packet(packet) == (3, P.WRITE, params)


def test_split_packet_skips_noise_and_waits_for_the_rest():
    packet = P.build_status(7, 0, b'\x01\x02')
    assert P.split_packet(b'\x00\x13' + packet[:6]) == (None, 2)
    assert P.split_packet(b'\x00\x13' + packet) == (packet, 2 + len(packet))


def test_corrupted_packet_is_rejected():
    packet = bytearray(P.build_status(1, 0, b'\x10'))
    packet[-1] ^= 0x01
    with pytest.raises(P.PacketError, match='CRC'):
        P.parse_packet(bytes(packet))


def test_error_bits_in_words():
    assert 'data limit error' in P.describe_status_error(6)
    words = P.describe_status_error(P.ALERT_BIT, hardware_status=(1 << 5) | (1 << 2))
    assert 'overload' in words and 'overheating' in words
    assert P.describe_status_error(0) == 'no error'


def test_units_round_trip():
    for rad in (-1.85, 0.0, 0.3, 2.2):
        assert abs(P.position_to_rad(P.rad_to_position(rad)) - rad) <= P.RAD_PER_POSITION / 2
    assert P.to_signed(0xFFFF, 2) == -1 and P.to_signed(0x7FFF, 2) == 0x7FFF


def test_sync_write_and_sync_read_through_emulator(bot, emulator):
    bot.torque(True)
    target = [0.1, -0.5, 0.8, 0.0, 0.4, -0.2]
    bot.command_arm(target)
    bot.command_gripper(1.0)
    emulator.wait_idle()  # sync writes have no reply to wait for
    assert emulator.servos[4].get('goal_position') == P.rad_to_position(0.8)
    deadline = time.monotonic() + 60  # the emulated motors settle with time, however fast (or slow) the reads are
    state = bot.read()
    while not np.allclose(state.position[:6], target, atol=0.01) and time.monotonic() < deadline:
        time.sleep(0.01)
        state = bot.read()
    np.testing.assert_allclose(state.position[:6], target, atol=0.01)
    assert state.position.shape == state.velocity.shape == state.effort.shape == (9,)
    assert state.position[8] == -state.position[7]
    instructions = {instruction for instruction, _ in emulator.instructions}
    assert {P.PING, P.WRITE, P.SYNC_WRITE, P.SYNC_READ} <= instructions


def test_operating_mode_change_restores_torque(bot, emulator):
    bot.torque(True)
    bot.set_operating_mode('gripper', 'current_based_position')
    gripper = emulator.servos[settings.GRIPPER_SERVO_ID]
    assert gripper.get('operating_mode') == P.OPERATING_MODES['current_based_position']
    assert gripper.get('torque_enable') == 1


def test_eeprom_write_with_torque_on_is_an_access_error_in_words(bot):
    bot.torque(True)
    with pytest.raises(ServoError, match=r'servo 9 \(gripper\).*access error'):
        bot.bus.write(settings.GRIPPER_SERVO_ID, 'operating_mode', 3)


def test_hardware_error_is_decoded_and_reboot_clears_it(bot, emulator):
    emulator.set_hardware_error(settings.GRIPPER_SERVO_ID, 1 << 5)
    with pytest.raises(ServoError, match='hardware alert: overload'):
        bot.read()
    bot.reboot_gripper()
    assert emulator.servos[settings.GRIPPER_SERVO_ID].get('torque_enable') == 1
    bot.read()


def test_corrupted_status_packet_and_silent_servo_are_named(bot, emulator):
    emulator.corrupt_replies(1)
    with pytest.raises(ServoCommError, match=r"servo 1 \(waist\) on bus 'puppet_left'.*corrupted status packet"):
        bot.read()
    bot.read()  # the next packet is fine again
    emulator.silence(6)
    with pytest.raises(ServoCommError, match=r'servo 6 \(forearm_roll\).*did not answer'):
        bot.read()


def test_missing_serial_port_names_device_and_how_to_list():
    with pytest.raises(RobotFault, match=r"(?s)'puppet_left'.*/dev/ttyDXL_nowhere not found.*list_ports"):
        DynamixelBus('puppet_left', '/dev/ttyDXL_nowhere')


def test_missing_servo_fails_at_connect(emulator):
    emulator.silence(8)
    with pytest.raises(ServoCommError, match=r'servo 8 \(wrist_rotate\)'):
        DynamixelBot('puppet_left', emulator.port, settings.PUPPET_MODEL)


def test_emulated_servos_answer_with_their_model_and_read_through_the_homing_offset():
    with ServoBusEmulator((1, 2), positions={2: 1000}, models={2: 'xl330-m288'}) as emulator:
        bus = DynamixelBus('koch', emulator.port)
        try:
            assert bus.ping(1) == P.MODEL_NUMBERS['xm430-w350'] and bus.ping(2) == 1200
            bus.write(2, 'homing_offset', 500)  # the shaft stays at 1000; it now reads 1500
            assert bus.read(2, 'present_position') == 1500 and bus.read(2, 'homing_offset') == 500
            bus.write(2, 'goal_position', 1600)
            bus.write(2, 'torque_enable', 1)
            deadline = time.monotonic() + 60
            while abs(bus.read(2, 'present_position') - 1600) > 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert abs(bus.read(2, 'present_position') - 1600) <= 2
            assert abs(emulator.servos[2]._position - 1100) <= 3  # the shaft moved by the goal's 100
        finally:
            bus.close()


def test_the_emulator_command_serves_the_models_asked_for(monkeypatch):
    from real_robot import emulator
    served = []
    monkeypatch.setattr(emulator, 'serve_until_interrupted', lambda bus, what: served.append(bus) or bus.close())
    emulator.main({'ids': [1, 2, 3], 'models': ['xl430-w250', 'xl330-m288', 'xl330-m288']})
    emulator.main({'ids': [1, 2], 'models': ['xl330-m077']})
    assert [s.get('model_number') for s in served[0].servos.values()] == [1060, 1200, 1200]
    assert [s.get('model_number') for s in served[1].servos.values()] == [1190, 1190]
    with pytest.raises(SystemExit, match='one model for every servo, or one per --ids entry'):
        emulator.main({'ids': [1, 2], 'models': ['xl330-m077'] * 3})
