package decoders

func (c *compiler) jsonEngine(jc *jsonConfig, path string) (engine, map[string]bool, []string) {
	c.d.errAt(path, "json not implemented yet")
	return nil, nil, nil
}
