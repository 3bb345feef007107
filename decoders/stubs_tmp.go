package decoders

func (c *compiler) jsonEngine(jc *jsonConfig, path string) (engine, map[string]bool, []string) {
	c.d.errAt(path, "json not implemented yet")
	return nil, nil, nil
}
func (c *compiler) binaryEngine(bc *binaryConfig, path string) (engine, map[string]bool, []string, map[string][]computedConfig) {
	c.d.errAt(path, "binary not implemented yet")
	return nil, nil, nil, nil
}
