from tests.wsclient import accept_value


def test_the_handshakes_accept_value_is_rfc_6455s():
    # The example of RFC 6455, section 1.3: the test client checks the app's answer with it.
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
