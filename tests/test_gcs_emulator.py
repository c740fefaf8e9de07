"""The storage emulator itself answers the real client (guards the fixtures the cloud tests use)."""


def test_roundtrip_through_real_client(gcs):
    blob = gcs.bucket(gcs.test_bucket).blob("hello/world.txt")
    blob.upload_from_string(b"hi there")
    got = gcs.bucket(gcs.test_bucket).get_blob("hello/world.txt")
    assert got.download_as_bytes() == b"hi there"
    assert got.crc32c and got.size == 8
